"""cnnc documents itself: every public name has a docstring, every argument of a public
function or method is explained where help() shows it, and the package ships py.typed so
that type checkers read its hints (PEP 561)."""
import inspect
import re
from importlib import resources

import cnnc
from cnnc import datasets, export, init, models, schedules

MODULES = [datasets, export, init, models, schedules]


def public_objects():
    """(qualified name, object): what cnnc.__all__ names, and the functions and classes the
    modules in MODULES define (or, for export, re-export)."""
    found = {}
    for name in cnnc.__all__:
        found[f"cnnc.{name}"] = getattr(cnnc, name)
    for module in MODULES:
        owner = module.__name__
        for name, value in vars(module).items():
            if name.startswith("_") or not (inspect.isfunction(value) or inspect.isclass(value)):
                continue
            if value.__module__.startswith(owner):
                found[f"{owner}.{name}"] = value
    return sorted(found.items())


def own_methods(cls):
    """(name, function) of the public methods, __init__ and __call__ a cnnc class defines
    itself (an inherited one is checked on the class that defines it)."""
    for name, value in vars(cls).items():
        if name.startswith("_") and name not in ("__init__", "__call__"):
            continue
        function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if inspect.isfunction(function):
            yield name, function


def class_docs(cls):
    """The docstrings of cls and of the cnnc classes it derives from: where a class explains
    the arguments of its constructor and of the protocol its methods share."""
    return [klass.__doc__ or "" for klass in cls.__mro__ if klass.__module__.startswith("cnnc")]


def unexplained(function, docs):
    """The arguments of function that none of docs names as a word (self, cls, *args and
    **kwargs need no explanation)."""
    text = "\n".join(docs)
    missing = []
    for parameter in list(inspect.signature(function).parameters.values()):
        if parameter.name in ("self", "cls") or parameter.kind in (parameter.VAR_POSITIONAL,
                                                                   parameter.VAR_KEYWORD):
            continue
        if not re.search(rf"(?<![\w.]){re.escape(parameter.name)}(?!\w)", text):
            missing.append(parameter.name)
    return missing


def undocumented_arguments():
    """Every public function or method with an argument its docs do not name, as
    "qualified.name: arg, arg"."""
    failures, seen = [], set()
    for qualified, value in public_objects():
        if inspect.ismodule(value):
            continue
        cls = value if inspect.isclass(value) else None
        if cls is None and not inspect.isfunction(value):
            cls = type(value)          # an instance such as cnnc.relu: its class explains it
        if cls is None:
            candidates = [(qualified, value, [inspect.getdoc(value) or ""])]
        else:
            if cls in seen:
                continue
            seen.add(cls)
            candidates = [(f"{cls.__module__}.{cls.__qualname__}.{name}", method,
                           [inspect.getdoc(method) or ""] + class_docs(cls))
                          for name, method in own_methods(cls)]
        for where, function, docs in candidates:
            missing = unexplained(function, docs)
            if missing:
                failures.append(f"{where}: {', '.join(missing)}")
    return failures


def test_every_public_name_has_a_docstring():
    missing = [name for name, value in public_objects()
               if not (inspect.getdoc(value) or "").strip()]
    assert not missing, "no docstring:\n  " + "\n  ".join(missing)


def test_public_methods_have_docstrings():
    missing = []
    for qualified, value in public_objects():
        cls = value if inspect.isclass(value) else None
        if cls is None:
            continue
        for name, method in own_methods(cls):
            if name != "__init__" and not (inspect.getdoc(method) or "").strip():
                missing.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    missing = sorted(set(missing))
    assert not missing, "methods without a docstring:\n  " + "\n  ".join(missing)


def test_every_argument_of_the_public_api_is_explained():
    failures = undocumented_arguments()
    assert not failures, "arguments no docstring explains:\n  " + "\n  ".join(failures)


def test_the_argument_check_finds_what_a_docstring_leaves_out():
    def scale(images, factor=2.0, *rest, **options):
        """The images times factor."""

    def shifted(values, offset):
        """values moved by values.offset, or by the offsets."""

    assert unexplained(scale, [scale.__doc__]) == []
    assert unexplained(scale, ["The pictures, scaled."]) == ["images", "factor"]
    assert unexplained(shifted, [shifted.__doc__]) == ["offset"]


def test_the_package_ships_py_typed():
    marker = resources.files("cnnc").joinpath("py.typed")
    assert marker.is_file(), f"{marker} is missing: type checkers would ignore cnnc's hints"

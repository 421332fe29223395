"""Valid calls of every kernel, as (kernel name, arguments), each builder taking keyword
arguments that replace one argument: the validation tests change one argument at a time,
so that each bad call tests one check."""
import numpy as np


def arr(*shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def fwd(**kw):
    a = dict(x=arr(2, 7, 9, 3), w=arr(3, 3, 3, 4), b=arr(4), stride=(1, 1), padding=(1, 1, 1, 1),
             slope=0.0)
    a.update(kw)
    return "conv2d_forward", (a["x"], a["w"], a["b"], a["stride"], a["padding"], a["slope"])


def gin(**kw):
    a = dict(dy=arr(2, 7, 9, 4), w=arr(3, 3, 3, 4), input_shape=(2, 7, 9, 3), stride=(1, 1),
             padding=(1, 1, 1, 1))
    a.update(kw)
    return "conv2d_grad_input", (a["dy"], a["w"], a["input_shape"], a["stride"], a["padding"])


def gpar(**kw):
    a = dict(x=arr(2, 7, 9, 3), dy=arr(2, 7, 9, 4), kernel_size=(3, 3), stride=(1, 1),
             padding=(1, 1, 1, 1))
    a.update(kw)
    return "conv2d_grad_params", (a["x"], a["dy"], a["kernel_size"], a["stride"], a["padding"])


def pfwd(**kw):
    a = dict(x=arr(2, 7, 9, 3), pool_size=(2, 2), stride=(2, 2))
    a.update(kw)
    return "maxpool2d_forward", (a["x"], a["pool_size"], a["stride"])


def pinf(**kw):
    """maxpool2d_inference, which takes maxpool2d_forward's arguments."""
    return "maxpool2d_inference", pfwd(**kw)[1]


def cmpi(**kw):
    """conv2d_maxpool_inference: conv2d_forward's arguments, then the pool's."""
    a = dict(x=arr(2, 7, 9, 3), w=arr(3, 3, 3, 4), b=arr(4), stride=(1, 1), padding=(1, 1, 1, 1),
             pool_size=(2, 2), pool_stride=(2, 2), slope=0.0)
    a.update(kw)
    return "conv2d_maxpool_inference", (a["x"], a["w"], a["b"], a["stride"], a["padding"],
                                        a["pool_size"], a["pool_stride"], a["slope"])


def valid_argmax(shape=(2, 3, 4, 3), plane=63):
    return (np.arange(np.prod(shape), dtype=np.int64) % plane).reshape(shape)


def pbwd(**kw):
    a = dict(dy=arr(2, 3, 4, 3), argmax=valid_argmax(), input_shape=(2, 7, 9, 3))
    a.update(kw)
    return "maxpool2d_backward", (a["dy"], a["argmax"], a["input_shape"])


def readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def adam(**kw):
    a = dict(param=arr(4, 5), grad=arr(4, 5, seed=1), m=arr(4, 5, seed=2),
             v=np.abs(arr(4, 5, seed=3)), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=3)
    a.update(kw)
    return "adam_update", tuple(a[k] for k in ("param", "grad", "m", "v", "lr", "beta1", "beta2",
                                               "eps", "step"))


def same(*names):
    """Adam arguments in which the named ones are one and the same array."""
    one = np.abs(arr(4, 5, seed=4))
    return adam(**{name: one for name in names})


def overlapping(*names, offset, start=0):
    """Adam arguments in which the named ones are (4, 5) views of one buffer, each starting
    `offset` bytes after the one before (from byte `start`): they share memory where
    offset < 160, their size in bytes; a whole number of float64 or not."""
    buffer = bytearray(start + 160 + (len(names) - 1) * offset)
    views = [np.frombuffer(buffer, np.float64, 20, start + i * offset).reshape(4, 5)
             for i in range(len(names))]
    for i, view in enumerate(views):
        view[...] = np.abs(arr(4, 5, seed=5 + i))
    return adam(**dict(zip(names, views)))


# Adam calls whose arrays share memory, and the two arguments the refusal names: the first
# of param, m and v (updated in place) that overlaps another argument, and that argument.
ALIASED = {
    "m-is-v": (lambda: same("m", "v"), "m and v"),
    "grad-is-v": (lambda: same("grad", "v"), "v and grad"),
    "param-is-m": (lambda: same("param", "m"), "param and m"),
    "param-is-grad": (lambda: same("param", "grad"), "param and grad"),
    "param-m-v-one-array": (lambda: same("param", "m", "v"), "param and m"),
    "m-v-views-of-the-same-memory": (lambda: overlapping("m", "v", offset=0), "m and v"),
    "m-v-overlapping-slices": (lambda: overlapping("m", "v", offset=56), "m and v"),
    "v-m-overlapping-by-one-value": (lambda: overlapping("v", "m", offset=152), "m and v"),
    "param-grad-overlapping": (lambda: overlapping("grad", "param", offset=24), "param and grad"),
    "param-v-half-a-value-apart": (lambda: overlapping("param", "v", offset=4, start=4),
                                   "param and v"),
}


def leaky(**kw):
    a = dict(x=arr(2, 3, 4), slope=0.01)
    a.update(kw)
    return "leaky_relu", (a["x"], a["slope"])


def leaky_back(**kw):
    a = dict(x=arr(2, 3, 4), upstream=arr(2, 3, 4, seed=1), slope=0.01)
    a.update(kw)
    return "leaky_relu_backward", (a["x"], a["upstream"], a["slope"])


def avgf(**kw):
    a = dict(x=arr(2, 7, 9, 3), pool_size=(2, 2), stride=(2, 2))
    a.update(kw)
    return "avgpool2d_forward", (a["x"], a["pool_size"], a["stride"])


def avgb(**kw):
    a = dict(dy=arr(2, 3, 4, 3), input_shape=(2, 7, 9, 3), pool_size=(2, 2), stride=(2, 2))
    a.update(kw)
    return "avgpool2d_backward", (a["dy"], a["input_shape"], a["pool_size"], a["stride"])


def bnf(**kw):
    a = dict(x=arr(6, 3), gamma=arr(3, seed=1), beta=arr(3, seed=2), eps=1e-5, slope=0.25)
    a.update(kw)
    return "batchnorm_forward", (a["x"], a["gamma"], a["beta"], a["eps"], a["slope"])


def bnb(**kw):
    a = dict(x=arr(6, 3), dy=arr(6, 3, seed=1), gamma=arr(3, seed=2), mean=arr(3, seed=3),
             var=np.abs(arr(3, seed=4)), eps=1e-5)
    a.update(kw)
    return "batchnorm_backward", (a["x"], a["dy"], a["gamma"], a["mean"], a["var"], a["eps"])


def bni(**kw):
    a = dict(x=arr(6, 3), gamma=arr(3, seed=1), beta=arr(3, seed=2), mean=arr(3, seed=3),
             var=np.abs(arr(3, seed=4)), eps=1e-5, slope=0.0)
    a.update(kw)
    return "batchnorm_inference", (a["x"], a["gamma"], a["beta"], a["mean"], a["var"], a["eps"],
                                   a["slope"])


def dense(**kw):
    a = dict(x=arr(5, 4), w=arr(4, 3, seed=1), b=arr(3, seed=2), slope=0.0)
    a.update(kw)
    return "dense_forward", (a["x"], a["w"], a["b"], a["slope"])


def mm(**kw):
    a = dict(a=arr(5, 4), b=arr(4, 3, seed=1))
    a.update(kw)
    return "matmul", (a["a"], a["b"])


def run(module, name, args):
    """The kernel's outputs as a tuple; for Adam, the updated param, m and v (on copies)."""
    if name == "adam_update":
        args = list(args)
        for i in (0, 2, 3):
            args[i] = args[i].copy()
        module.adam_update(*args)
        return args[0], args[2], args[3]
    result = getattr(module, name)(*args)
    return result if isinstance(result, tuple) else (result,)

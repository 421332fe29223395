"""matplotlib for the examples' figures, where it is installed (pip install '.[examples]')."""


def pyplot():
    """matplotlib.pyplot drawing to files, or None (saying so) where matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(no PNG: matplotlib is not installed; pip install '.[examples]')")
        return None
    return plt

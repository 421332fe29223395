# The threads the loops run on: OpenMP where the compiler had it, how many threads
# (CNNC_NUM_THREADS, set_num_threads), one thread in a child made by fork(), and how a
# loop over a few pieces takes no more threads than it has pieces.

cdef extern from *:
    """
    #ifdef _OPENMP
    #define CNNC_HAS_OPENMP 1
    #else
    #define CNNC_HAS_OPENMP 0
    #endif
    """
    bint CNNC_HAS_OPENMP

# Threads for the loops over the batch: CNNC_NUM_THREADS, or every core (one where the
# compiler had no OpenMP: the loops then run on the calling thread, whatever is asked).
cdef int _threads = _checks.thread_count("CNNC_NUM_THREADS")
if not CNNC_HAS_OPENMP:
    _threads = 1

# A child made by fork() has none of the parent's threads, and GNU OpenMP's pool does not
# know it: the child's first parallel loop would wait forever for workers that are gone.
# A team of one thread needs no pool, so the child computes on its own thread, and keeps to
# it: OpenMP cannot make a new pool there, so asking for more is refused, not a hang.
cdef extern from *:
    """
    #if defined(_WIN32)
    static int cnnc_at_fork_in_child(void (*handler)(void)) { (void)handler; return 0; }
    #else
    #include <pthread.h>
    static int cnnc_at_fork_in_child(void (*handler)(void)) {
        return pthread_atfork(NULL, NULL, handler);
    }
    #endif
    """
    int cnnc_at_fork_in_child(void (*handler)() noexcept nogil)


cdef bint _forked = False


cdef void _one_thread_after_fork() noexcept nogil:
    global _threads, _forked
    _threads = 1
    _forked = True


def set_num_threads(n):
    """Run the loops on n threads from now on (CNNC_NUM_THREADS sets the first count); in a
    child made by fork(), one thread only: more is a RuntimeError."""
    global _threads
    n = _checks.num_threads(n)
    if n > 1 and _forked and CNNC_HAS_OPENMP:
        raise RuntimeError(
            f"set_num_threads({n}): this process was made by fork(), and OpenMP cannot start "
            "threads in it, so cnnc computes on one thread here. For workers with threads of "
            "their own, start them with multiprocessing's 'spawn' or 'forkserver' method.")
    _threads = n if CNNC_HAS_OPENMP else 1


def get_num_threads():
    """How many threads the loops run on (1 in a child made by fork(), and in a build
    without OpenMP)."""
    return _threads


if cnnc_at_fork_in_child(_one_thread_after_fork) != 0:
    raise ImportError("cnnc._kernels could not register its fork handler (pthread_atfork)")


# The elementwise kernels and Adam share out their arrays in blocks of this many elements.
cdef Py_ssize_t _BLOCK = 16384


cdef inline int _team(Py_ssize_t pieces) noexcept nogil:
    """Threads for a loop over this many pieces: no more threads than pieces."""
    return _threads if pieces >= _threads else (<int>pieces if pieces > 0 else 1)


# Waking the sleeping threads for a loop costs tens of microseconds (more on a busy
# machine): a loop runs on more threads only with at least this much work for each, in
# multiply-adds for the convolutions and values for the loops that stream memory. The
# split of the work does not depend on it, so neither do the results.
cdef Py_ssize_t _MULTIPLY_ADDS_PER_THREAD = 1 << 22
cdef Py_ssize_t _VALUES_PER_THREAD = 1 << 16


cdef inline int _team_for(Py_ssize_t pieces, Py_ssize_t work, Py_ssize_t per_thread) noexcept nogil:
    """Threads for a loop over this many pieces holding this much work: no more than
    pieces, nor than shares of per_thread work."""
    cdef Py_ssize_t shares = work // per_thread
    return _team(pieces if pieces < shares else (shares if shares > 1 else 1))


def _rows_apart(rows, count):
    """Zeros (rows, n), n >= count float64, each row's first count values a cache line or more
    from the next row's: threads adding into rows of their own then never write to a line
    another thread is using, which would pass it back and forth between their cores."""
    return np.zeros((rows, (count + 7) // 8 * 8 + 8))

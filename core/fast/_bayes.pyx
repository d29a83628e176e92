"""Compiled scorer: token counts in memory, Robinson/Fisher spam probability.

Private: ``core.spam.scorer`` builds the table from the token store and
calls ``score``. Each step mirrors ``core/spam/bayes_py.py`` (the twin) in
the same order, so both give the same floats.
"""

from libc.math cimport exp, fabs, log
from libc.stdint cimport int64_t, uint32_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memset


cdef inline Py_ssize_t _hash_slot(int64_t token, Py_ssize_t mask) noexcept nogil:
    # Token values are already well-mixed hashes; fold the high half in.
    cdef unsigned long long x = <unsigned long long>token
    return <Py_ssize_t>((x ^ (x >> 32)) & <unsigned long long>mask)


cdef class CountTable:
    """Ham and spam counts per token hash (0 is never a token)."""

    def __cinit__(self, Py_ssize_t capacity=1024):
        self.keys = NULL
        self.ham = NULL
        self.spam = NULL
        self.used = 0
        self.mask = 0
        self._grow(capacity)

    def __dealloc__(self):
        free(self.keys)
        free(self.ham)
        free(self.spam)

    cdef int _grow(self, Py_ssize_t wanted) except -1:
        cdef Py_ssize_t size = 16
        cdef Py_ssize_t k
        cdef Py_ssize_t old_size = self.mask + 1 if self.keys != NULL else 0
        cdef int64_t *old_keys = self.keys
        cdef uint32_t *old_ham = self.ham
        cdef uint32_t *old_spam = self.spam
        while size < wanted * 2:
            size *= 2
        self.keys = <int64_t *>calloc(size, sizeof(int64_t))
        self.ham = <uint32_t *>calloc(size, sizeof(uint32_t))
        self.spam = <uint32_t *>calloc(size, sizeof(uint32_t))
        if self.keys == NULL or self.ham == NULL or self.spam == NULL:
            free(self.keys)
            free(self.ham)
            free(self.spam)
            self.keys, self.ham, self.spam = old_keys, old_ham, old_spam
            raise MemoryError()
        self.mask = size - 1
        self.used = 0
        for k in range(old_size):
            if old_keys[k] != 0:
                self._put(old_keys[k], old_ham[k], old_spam[k])
        free(old_keys)
        free(old_ham)
        free(old_spam)
        return 0

    cdef Py_ssize_t _slot(self, int64_t token) noexcept nogil:
        cdef Py_ssize_t slot = _hash_slot(token, self.mask)
        while self.keys[slot] != 0 and self.keys[slot] != token:
            slot = (slot + 1) & self.mask
        return slot

    cdef int _put(self, int64_t token, uint32_t ham, uint32_t spam) except -1:
        cdef Py_ssize_t slot
        if token == 0:
            raise ValueError("token hash 0 is reserved")
        if (self.used + 1) * 2 > self.mask + 1:
            self._grow(self.used + 1)
        slot = self._slot(token)
        if self.keys[slot] == 0:
            self.keys[slot] = token
            self.used += 1
        self.ham[slot] = ham
        self.spam[slot] = spam
        return 0

    def __len__(self):
        return self.used

    def put(self, int64_t token, uint32_t ham, uint32_t spam):
        """Set the counts of one token."""
        self._put(token, ham, spam)

    def load(self, const long long[::1] tokens, const unsigned int[::1] ham,
             const unsigned int[::1] spam):
        """Set the counts of many tokens (three arrays of one length)."""
        cdef Py_ssize_t k
        if tokens.shape[0] != ham.shape[0] or tokens.shape[0] != spam.shape[0]:
            raise ValueError("tokens, ham and spam differ in length")
        if (self.used + tokens.shape[0]) * 2 > self.mask + 1:
            self._grow(self.used + tokens.shape[0])
        for k in range(tokens.shape[0]):
            self._put(tokens[k], ham[k], spam[k])

    def get(self, int64_t token):
        """(ham, spam) counts of a token, (0, 0) when unknown."""
        if token == 0:
            return (0, 0)
        cdef Py_ssize_t slot = self._slot(token)
        if self.keys[slot] == 0:
            return (0, 0)
        return (self.ham[slot], self.spam[slot])


cdef double _chi2q(double x2, Py_ssize_t v) noexcept nogil:
    """Probability that chi-square with v (even) degrees of freedom >= x2."""
    cdef double m = x2 / 2.0
    cdef double term = exp(-m)
    cdef double total = term
    cdef Py_ssize_t i
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return total if total < 1.0 else 1.0


def chi2q(double x2, Py_ssize_t v):
    """Upper tail of chi-square (v even), as used by the combining step."""
    return _chi2q(x2, v)


cdef int _by_strength(const void *a, const void *b) noexcept nogil:
    # Strongest first; equal strength: smaller token first (as the twin sorts).
    cdef const _ClueC *x = <const _ClueC *>a
    cdef const _ClueC *y = <const _ClueC *>b
    if x.distance > y.distance:
        return -1
    if x.distance < y.distance:
        return 1
    if x.token < y.token:
        return -1
    if x.token > y.token:
        return 1
    return 0


def score(CountTable table, const long long[::1] tokens, long nham, long nspam,
          double strength, double unknown, double min_distance,
          Py_ssize_t max_clues, Py_ssize_t explain):
    """(probability, clue count, [(token, prob)] of the ``explain`` strongest).

    Repeated tokens count once. Needs nham > 0 and nspam > 0.
    """
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t size = 16
    cdef Py_ssize_t k, slot, count = 0, used
    cdef int64_t token
    cdef int64_t *seen = NULL
    cdef _ClueC *clues = NULL
    cdef double hamratio, spamratio, prob, total, f
    cdef double spam_log = 0.0
    cdef double ham_log = 0.0
    cdef double s_stat, h_stat
    cdef uint32_t ham, spam
    if nham <= 0 or nspam <= 0:
        raise ValueError("scoring needs ham and spam training")
    while size < n * 2:
        size *= 2
    seen = <int64_t *>calloc(size, sizeof(int64_t))
    clues = <_ClueC *>malloc((n + 1) * sizeof(_ClueC))
    if seen == NULL or clues == NULL:
        free(seen)
        free(clues)
        raise MemoryError()
    try:
        with nogil:
            for k in range(n):
                token = tokens[k]
                if token == 0:
                    continue
                slot = _hash_slot(token, size - 1)
                while seen[slot] != 0 and seen[slot] != token:
                    slot = (slot + 1) & (size - 1)
                if seen[slot] == token:
                    continue
                seen[slot] = token

                slot = table._slot(token)
                if table.keys[slot] == 0:
                    continue
                ham = table.ham[slot]
                spam = table.spam[slot]
                if ham > nham:
                    ham = nham
                if spam > nspam:
                    spam = nspam
                hamratio = ham / <double>nham
                spamratio = spam / <double>nspam
                if hamratio + spamratio == 0.0:
                    continue
                prob = spamratio / (hamratio + spamratio)
                total = <double>(ham + spam)
                f = (strength * unknown + total * prob) / (strength + total)
                if fabs(f - 0.5) < min_distance:
                    continue
                clues[count].distance = fabs(f - 0.5)
                clues[count].prob = f
                clues[count].token = token
                count += 1

            qsort(clues, count, sizeof(_ClueC), _by_strength)
            used = count if count < max_clues else max_clues
            for k in range(used):
                spam_log += log(1.0 - clues[k].prob)
                ham_log += log(clues[k].prob)
        if used == 0:
            prob = 0.5
        else:
            s_stat = 1.0 - _chi2q(-2.0 * spam_log, 2 * used)
            h_stat = 1.0 - _chi2q(-2.0 * ham_log, 2 * used)
            prob = (s_stat - h_stat + 1.0) / 2.0
        top = [(clues[k].token, clues[k].prob) for k in range(min(explain, used))]
        return prob, used, top
    finally:
        free(seen)
        free(clues)

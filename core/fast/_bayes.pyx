"""Compiled scorer: token counts and weights in memory, two combining steps.

Private: ``core.spam.scorer`` builds the table from the token store and
calls ``score`` (Robinson/Fisher chi-square over the counts) or
``logistic`` (logistic regression over the weights); ``tone`` is one
train-on-or-near-error step of the weights. Each step mirrors
``core/spam/bayes_py.py`` (the twin) in the same order, so both give the
same floats.
"""

from libc.math cimport exp, fabs, log
from libc.stdint cimport int64_t, uint32_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memset


cdef inline Py_ssize_t _hash_slot(int64_t token, Py_ssize_t mask) noexcept nogil:
    # Token values are already well-mixed hashes; fold the high half in.
    cdef unsigned long long x = <unsigned long long>token
    return <Py_ssize_t>((x ^ (x >> 32)) & <unsigned long long>mask)


cdef inline bint _first_sighting(int64_t *seen, Py_ssize_t mask,
                                 int64_t token) noexcept nogil:
    # Open-addressed set of the tokens met so far in one message: a token
    # repeated in a message is one piece of evidence, not several.
    cdef Py_ssize_t slot = _hash_slot(token, mask)
    while seen[slot] != 0 and seen[slot] != token:
        slot = (slot + 1) & mask
    if seen[slot] == token:
        return False
    seen[slot] = token
    return True


cdef Py_ssize_t _seen_size(Py_ssize_t n) noexcept nogil:
    # A power of two at least twice the token count keeps probing short.
    cdef Py_ssize_t size = 16
    while size < n * 2:
        size *= 2
    return size


cdef class CountTable:
    """Ham and spam counts per token hash (0 is never a token)."""

    def __cinit__(self, Py_ssize_t capacity=1024):
        self.keys = NULL
        self.ham = NULL
        self.spam = NULL
        self.weight = NULL
        self.used = 0
        self.mask = 0
        self._grow(capacity)

    def __dealloc__(self):
        free(self.keys)
        free(self.ham)
        free(self.spam)
        free(self.weight)

    cdef int _grow(self, Py_ssize_t wanted) except -1:
        cdef Py_ssize_t size = 16
        cdef Py_ssize_t k
        cdef Py_ssize_t old_size = self.mask + 1 if self.keys != NULL else 0
        cdef int64_t *old_keys = self.keys
        cdef uint32_t *old_ham = self.ham
        cdef uint32_t *old_spam = self.spam
        cdef double *old_weight = self.weight
        cdef Py_ssize_t slot
        while size < wanted * 2:
            size *= 2
        self.keys = <int64_t *>calloc(size, sizeof(int64_t))
        self.ham = <uint32_t *>calloc(size, sizeof(uint32_t))
        self.spam = <uint32_t *>calloc(size, sizeof(uint32_t))
        self.weight = <double *>calloc(size, sizeof(double))
        if (self.keys == NULL or self.ham == NULL or self.spam == NULL
                or self.weight == NULL):
            free(self.keys)
            free(self.ham)
            free(self.spam)
            free(self.weight)
            self.keys, self.ham, self.spam = old_keys, old_ham, old_spam
            self.weight = old_weight
            raise MemoryError()
        self.mask = size - 1
        self.used = 0
        for k in range(old_size):
            if old_keys[k] != 0:
                slot = self._slot(old_keys[k])
                self.keys[slot] = old_keys[k]
                self.ham[slot] = old_ham[k]
                self.spam[slot] = old_spam[k]
                self.weight[slot] = old_weight[k]
                self.used += 1
        free(old_keys)
        free(old_ham)
        free(old_spam)
        free(old_weight)
        return 0

    cdef Py_ssize_t _slot(self, int64_t token) noexcept nogil:
        cdef Py_ssize_t slot = _hash_slot(token, self.mask)
        while self.keys[slot] != 0 and self.keys[slot] != token:
            slot = (slot + 1) & self.mask
        return slot

    cdef Py_ssize_t _insert(self, int64_t token) except -1:
        # The slot of ``token``, made (with zero counts and weight) if new.
        cdef Py_ssize_t slot
        if token == 0:
            raise ValueError("token hash 0 is reserved")
        if (self.used + 1) * 2 > self.mask + 1:
            self._grow(self.used + 1)
        slot = self._slot(token)
        if self.keys[slot] == 0:
            self.keys[slot] = token
            self.used += 1
        return slot

    cdef int _put(self, int64_t token, uint32_t ham, uint32_t spam) except -1:
        cdef Py_ssize_t slot = self._insert(token)
        self.ham[slot] = ham
        self.spam[slot] = spam
        return 0

    def __len__(self):
        return self.used

    def put(self, int64_t token, uint32_t ham, uint32_t spam):
        """Set the counts of one token."""
        self._put(token, ham, spam)

    def put_weight(self, int64_t token, double weight):
        """Set the logistic weight of one token."""
        self.weight[self._insert(token)] = weight

    def load(self, const long long[::1] tokens, const unsigned int[::1] ham,
             const unsigned int[::1] spam, const double[::1] weight=None):
        """Set counts (and weights) of many tokens (arrays of one length)."""
        cdef Py_ssize_t k
        if tokens.shape[0] != ham.shape[0] or tokens.shape[0] != spam.shape[0]:
            raise ValueError("tokens, ham and spam differ in length")
        if weight is not None and weight.shape[0] != tokens.shape[0]:
            raise ValueError("tokens and weights differ in length")
        if (self.used + tokens.shape[0]) * 2 > self.mask + 1:
            self._grow(self.used + tokens.shape[0])
        for k in range(tokens.shape[0]):
            self._put(tokens[k], ham[k], spam[k])
            if weight is not None:
                self.weight[self._slot(tokens[k])] = weight[k]

    def get_weight(self, int64_t token):
        """The logistic weight of a token, 0.0 when unknown."""
        if token == 0:
            return 0.0
        cdef Py_ssize_t slot = self._slot(token)
        return self.weight[slot] if self.keys[slot] != 0 else 0.0

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
    cdef Py_ssize_t size
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
    size = _seen_size(n)
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
                if not _first_sighting(seen, size - 1, token):
                    continue

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


cdef double _sigmoid(double z) noexcept nogil:
    # Clamped so that exp cannot overflow; 1e-22 is as sure as it gets.
    if z > 50.0:
        z = 50.0
    elif z < -50.0:
        z = -50.0
    return 1.0 / (1.0 + exp(-z))


def logistic(CountTable table, const long long[::1] tokens, Py_ssize_t explain):
    """(probability, weighted token count, [(token, weight)] of the strongest).

    Logistic regression over binary features: repeated tokens count once,
    the sum of the weights goes through the logistic function.
    """
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t size
    cdef Py_ssize_t k, slot, count = 0
    cdef int64_t token
    cdef int64_t *seen = NULL
    cdef _ClueC *clues = NULL
    cdef double z = 0.0
    cdef double w, prob
    size = _seen_size(n)
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
                if not _first_sighting(seen, size - 1, token):
                    continue

                slot = table._slot(token)
                if table.keys[slot] == 0:
                    continue
                w = table.weight[slot]
                if w == 0.0:
                    continue
                z += w
                clues[count].distance = fabs(w)
                clues[count].prob = w
                clues[count].token = token
                count += 1
            prob = _sigmoid(z)
            if explain > 0:
                # Largest |weight| first, as _by_strength orders distances.
                qsort(clues, count, sizeof(_ClueC), _by_strength)
        top = [(clues[k].token, clues[k].prob) for k in range(min(explain, count))]
        return prob, count, top
    finally:
        free(seen)
        free(clues)


def tone(CountTable table, const long long[::1] tokens, bint is_spam,
         double rate, double margin, CountTable also=None):
    """One train-on-or-near-error step; returns the step added to each weight.

    ``tokens`` must be distinct. Nothing changes (0.0 is returned) when the
    probability is already within ``margin`` of the label. The step is added
    to the weights in ``also`` too, which so sums what a batch changed.
    """
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t k, slot
    cdef double z = 0.0
    cdef double target = 1.0 if is_spam else 0.0
    cdef double step
    for k in range(n):
        if tokens[k] == 0:
            continue
        slot = table._slot(tokens[k])
        if table.keys[slot] != 0:
            z += table.weight[slot]
    step = target - _sigmoid(z)
    if fabs(step) < margin:
        return 0.0
    step *= rate
    for k in range(n):
        if tokens[k] == 0:
            continue
        slot = table._insert(tokens[k])
        table.weight[slot] += step
        if also is not None:
            slot = also._insert(tokens[k])
            also.weight[slot] += step
    return step

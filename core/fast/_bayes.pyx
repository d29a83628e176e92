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
        self.slots = NULL
        self.used = 0
        self.mask = 0
        self._grow(capacity)

    def __dealloc__(self):
        free(self.slots)

    cdef int _grow(self, Py_ssize_t wanted) except -1:
        cdef Py_ssize_t size = 16
        cdef Py_ssize_t k
        cdef Py_ssize_t old_size = self.mask + 1 if self.slots != NULL else 0
        cdef _EntryC *old = self.slots
        cdef _EntryC *fresh
        while size < wanted * 2:
            size *= 2
        fresh = <_EntryC *>calloc(size, sizeof(_EntryC))
        if fresh == NULL:
            raise MemoryError()
        self.slots = fresh
        self.mask = size - 1
        self.used = 0
        for k in range(old_size):
            if old[k].key != 0:
                self.slots[self._slot(old[k].key)] = old[k]
                self.used += 1
        free(old)
        return 0

    cdef Py_ssize_t _slot(self, int64_t token) noexcept nogil:
        cdef Py_ssize_t slot = _hash_slot(token, self.mask)
        while self.slots[slot].key != 0 and self.slots[slot].key != token:
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
        if self.slots[slot].key == 0:
            self.slots[slot].key = token
            self.used += 1
        return slot

    cdef int _put(self, int64_t token, uint32_t ham, uint32_t spam) except -1:
        cdef Py_ssize_t slot = self._insert(token)
        self.slots[slot].ham = ham
        self.slots[slot].spam = spam
        return 0

    def __len__(self):
        return self.used

    def put(self, int64_t token, uint32_t ham, uint32_t spam):
        """Set the counts of one token."""
        self._put(token, ham, spam)

    def put_weight(self, int64_t token, double weight):
        """Set the logistic weight of one token."""
        self.slots[self._insert(token)].weight = weight

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
                self.slots[self._slot(tokens[k])].weight = weight[k]

    def get_weight(self, int64_t token):
        """The logistic weight of a token, 0.0 when unknown."""
        if token == 0:
            return 0.0
        cdef Py_ssize_t slot = self._slot(token)
        return self.slots[slot].weight if self.slots[slot].key != 0 else 0.0

    def get(self, int64_t token):
        """(ham, spam) counts of a token, (0, 0) when unknown."""
        if token == 0:
            return (0, 0)
        cdef Py_ssize_t slot = self._slot(token)
        if self.slots[slot].key == 0:
            return (0, 0)
        return (self.slots[slot].ham, self.slots[slot].spam)


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


cdef Py_ssize_t _pick_strongest(const _ClueC *clues, Py_ssize_t count, _ClueC *best,
                                Py_ssize_t want) noexcept nogil:
    # The ``want`` strongest clues into best, strongest first: insertion into
    # a short sorted run, cheaper than sorting every clue to name ten.
    cdef Py_ssize_t k, j
    cdef Py_ssize_t filled = 0
    if want <= 0:
        return 0
    for k in range(count):
        if filled == want and _by_strength(&clues[k], &best[filled - 1]) >= 0:
            continue
        j = filled if filled < want else want - 1
        while j > 0 and _by_strength(&clues[k], &best[j - 1]) < 0:
            best[j] = best[j - 1]
            j -= 1
        best[j] = clues[k]
        if filled < want:
            filled += 1
    return filled


cdef list _top(const _ClueC *clues, Py_ssize_t count, Py_ssize_t explain,
               bint ordered):
    """[(token, prob)] of the ``explain`` strongest of ``count`` clues."""
    cdef Py_ssize_t k, found
    cdef Py_ssize_t want = explain if explain < count else count
    cdef _ClueC *best
    if want <= 0:
        return []
    if ordered:
        return [(clues[k].token, clues[k].prob) for k in range(want)]
    best = <_ClueC *>malloc(want * sizeof(_ClueC))
    if best == NULL:
        raise MemoryError()
    try:
        found = _pick_strongest(clues, count, best, want)
        return [(best[k].token, best[k].prob) for k in range(found)]
    finally:
        free(best)


def score(CountTable table, const long long[::1] tokens, long nham, long nspam,
          double strength, double unknown, double min_distance,
          Py_ssize_t max_clues, Py_ssize_t explain):
    """(probability, clue count, [(token, prob)] of the ``explain`` strongest).

    Repeated tokens count once. Needs nham > 0 and nspam > 0.
    """
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t size
    cdef Py_ssize_t k, count = 0, used
    cdef int64_t token
    cdef _EntryC *entry
    cdef int64_t *seen = NULL
    cdef _ClueC *clues = NULL
    cdef double hamratio, spamratio, prob, total, f
    cdef double spam_log = 0.0
    cdef double ham_log = 0.0
    cdef double s_stat, h_stat
    cdef uint32_t ham, spam
    cdef bint ordered
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

                entry = &table.slots[table._slot(token)]
                if entry.key == 0:
                    continue
                ham = entry.ham
                spam = entry.spam
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

            # Sorted only when some clues must be left out; all of them
            # are combined in the order met otherwise (as the twin does).
            ordered = count > max_clues
            if ordered:
                qsort(clues, count, sizeof(_ClueC), _by_strength)
            used = max_clues if ordered else count
            for k in range(used):
                spam_log += log(1.0 - clues[k].prob)
                ham_log += log(clues[k].prob)
        if used == 0:
            prob = 0.5
        else:
            s_stat = 1.0 - _chi2q(-2.0 * spam_log, 2 * used)
            h_stat = 1.0 - _chi2q(-2.0 * ham_log, 2 * used)
            prob = (s_stat - h_stat + 1.0) / 2.0
        return prob, used, _top(clues, used, explain, ordered)
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
    cdef Py_ssize_t k, count = 0
    cdef int64_t token
    cdef _EntryC *entry
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

                entry = &table.slots[table._slot(token)]
                if entry.key == 0:
                    continue
                w = entry.weight
                if w == 0.0:
                    continue
                z += w
                clues[count].distance = fabs(w)
                clues[count].prob = w
                clues[count].token = token
                count += 1
            prob = _sigmoid(z)
        # Largest |weight| first, as _by_strength orders distances.
        return prob, count, _top(clues, count, explain, False)
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
        if table.slots[slot].key != 0:
            z += table.slots[slot].weight
    step = target - _sigmoid(z)
    if fabs(step) < margin:
        return 0.0
    step *= rate
    for k in range(n):
        if tokens[k] == 0:
            continue
        table.slots[table._insert(tokens[k])].weight += step
        if also is not None:
            also.slots[also._insert(tokens[k])].weight += step
    return step

"""Tokens of a parsed message: the compiled tokenizer when built, else its twin.

``tokenize(parsed)`` gives the 64-bit token hashes (with repeats, in order);
``names(parsed, wanted)`` names the given hashes, for "why was this caught".
The compiled tokenizer takes its segments from the compiled feature step
(``core.fast._features``) when that is built, the twin from
``core.spam.features``; both give the same segments.
"""

from __future__ import annotations

from core.message import ParsedMessage
from core.spam import builds, features, tokenize_py
from core.spam.tokenspec import Options

try:
    from core.fast import _tokenize as _compiled
except ImportError:  # not built: the twin does the same, slower
    _compiled = None

try:
    from core.fast import _features as _compiled_features
except ImportError:  # not built: the twin's feature step gives the same
    _compiled_features = None

COMPILED = _compiled is not None
_IMPL = _compiled if COMPILED else tokenize_py


def implementation(compiled: bool | None = None):
    """The module that hashes segments; ``compiled=False`` forces the twin."""
    return builds.choose(_compiled, tokenize_py, compiled, "_tokenize")


def features_for(impl=None):
    """The feature step that goes with the hashing module ``impl``."""
    impl = impl or _IMPL
    if impl is _compiled and _compiled_features is not None:
        return _compiled_features
    return features


def options(settings=None) -> Options:
    """Tokenizer options from the settings (defaults where a key is absent)."""
    if settings is None:
        return Options()
    defaults = Options()
    return Options(
        window=getattr(settings, "bayes_bigrams", defaults.window),
        max_tokens=getattr(settings, "bayes_max_tokens", defaults.max_tokens),
    )


def tokenize(parsed: ParsedMessage, opts: Options = Options(), impl=None):
    """Token hashes of ``parsed`` as array('q')."""
    impl = impl or _IMPL
    return impl.hash_segments(features_for(impl).segments(parsed), opts)


def names(parsed: ParsedMessage, wanted, opts: Options = Options(), impl=None):
    """{hash: token text} for the hashes in ``wanted`` that ``parsed`` has."""
    impl = impl or _IMPL
    _, found = impl.hash_segments(features_for(impl).segments(parsed), opts,
                                  set(wanted))
    return found

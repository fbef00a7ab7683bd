"""Characters that show nothing, for every layer: the settings check their prompt with
it, ``roost.inputs`` cleans names and texts with it.  (``roost.inputs`` re-exports
:func:`is_invisible` and :data:`FILLERS`, where the rest of the code imports them from.)"""

from __future__ import annotations

import unicodedata
from typing import Final

# Characters Unicode calls default-ignorable that are not format characters (Cf): the
# combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other
# variation selectors (the supplementary ones, U+E0100-U+E01EF, too), and the code points
# reserved as default-ignorable that are not assigned yet (U+2065, U+FFF0-U+FFF8, the
# rest of plane 14's first block), which a later Unicode may assign and fonts already
# show as nothing.  Shown alone, they show nothing.
_IGNORABLE_RANGES: Final = ((0x180B, 0x1810), (0x2065, 0x2066), (0xFE00, 0xFE10),
                            (0xFFF0, 0xFFF9), (0xE0000, 0xE1000))
_IGNORABLE: Final = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0"
    + "".join(chr(c) for start, end in _IGNORABLE_RANGES for c in range(start, end)))


FILLERS: Final = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")
"""Letters and marks that show as nothing (Hangul fillers, the grapheme joiner, Khmer
inherent vowels): unlike the variation selectors, never needed in a name."""


def is_invisible(char: str) -> bool:
    """Whether ``char`` shows nothing: white space, a format character (Unicode category
    Cf: zero-width spaces and joiners, the byte order mark, bidi marks), a control
    character (Cc: BEL, DEL) or another default-ignorable one (a Hangul filler, a
    variation selector)."""
    return char.isspace() or unicodedata.category(char) in ("Cf", "Cc") or char in _IGNORABLE

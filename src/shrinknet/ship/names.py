"""The one place where text reaches a generated file: one function per output language.

Model files, run directories and ``--out`` paths come from users who may have got them from
someone else, and generated C goes into firmware. So every string that shrinknet writes into C,
ONNX, HTML or a figure goes through exactly one of these functions. Each either returns a form
that cannot leave its place (a comment stays a comment, text stays text) or refuses the string
with ``InputError`` (one line) when it cannot be expressed safely there.

C (C99, checked with ``gcc -std=c99 -Wall -Wextra -Werror``):

* :func:`c_prefix` -- the ``--prefix`` naming ``<prefix>_forward`` and the ``<PREFIX>_*`` macros
  and header guard. Only lower-case identifiers are taken (``[a-z][a-z0-9_]*``): the macros are
  the prefix in upper case, and taking only lower case makes that one-to-one, so ``net`` and
  ``NET`` can never give one header guard (``NET`` is refused; a leading underscore is reserved
  to the C implementation and refused too).
* :func:`c_include_name` -- the header's file name in ``#include "<name>"``. A q-char-sequence
  (C99 6.4.7) may not hold ``"`` or a newline, and ``'``, ``\\``, ``//`` and ``/*`` in it are
  undefined behaviour, so only ASCII letters, digits, ``.``, ``_``, ``-`` and ``+`` are taken;
  anything else (quotes, backslashes, newlines, control characters, non-ASCII) is refused.
* :func:`c_comment` -- text inside ``/* ... */``: one line of printable ASCII in which no ``*/``
  or ``/*`` can form (a backslash goes between ``*`` and ``/``), no trigraph (``??`` becomes
  ``?\\?``), and every other character (newlines, control characters, non-ASCII, which could
  also be bidirectional controls) written as a ``\\uXXXX`` escape; a backslash that would end
  the line (a line splice) is written ``\\u005c``.

ONNX: :func:`onnx_name` (node and initializer names: ``[A-Za-z0-9_.:-]``, else refused) and
:func:`onnx_text` (doc strings and metadata values: control characters and lone surrogates
escaped, so the protobuf string is valid UTF-8 that prints on one line).

HTML: :func:`html_text` (``&``, ``<``, ``>``, ``"`` and ``'`` escaped; control characters escaped).

Figures: :data:`FIGURE_RC` turns matplotlib's mathtext and TeX off for every text of a figure
(``text.parse_math``/``text.usetex``), so a ``$`` in a run's name is a dollar sign; :func:`figure_text`
escapes control characters.
"""

from __future__ import annotations

import html
import re

from ..errors import InputError

_C_PREFIX = re.compile(r"[a-z][a-z0-9_]*\Z")
_C_INCLUDE = re.compile(r"[A-Za-z0-9._+-]+\Z")
_ONNX_NAME = re.compile(r"[A-Za-z0-9_.:-]+\Z")


def _escape_char(ch: str) -> str:
    o = ord(ch)
    return f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1, line and paragraph separators,
    bidirectional controls) and lone surrogate escaped (``\\n``, ``\\r``, ``\\t``, else ``\\uXXXX``): prints as one line, encodes as
    UTF-8. The command line's error lines go through it too (cli/base.py)."""
    return "".join((_SHORT.get(ch) or _escape_char(ch)) if _unsafe(ch) else ch for ch in str(text))


def _unsafe(ch: str) -> bool:
    o = ord(ch)
    return (o < 0x20 or 0x7F <= o < 0xA0 or 0xD800 <= o < 0xE000
            or o in (0x200E, 0x200F, 0x2028, 0x2029) or 0x202A <= o <= 0x202E or 0x2066 <= o <= 0x2069)  # bidi


# -- C -----------------------------------------------------------------------------------------
def c_prefix(prefix) -> str:
    """``prefix`` if it is a lower-case C identifier (see the module docstring), else InputError."""
    if not isinstance(prefix, str) or not _C_PREFIX.match(prefix):
        shown = one_line(repr(prefix))
        raise InputError(
            f"prefix {shown} is not a C identifier in lower case: use lower-case letters, digits and underscores, "
            "starting with a letter (the macros are its upper case, so 'net' and 'NET' would collide)"
        )
    return prefix


def c_include_name(name: str) -> str:
    """``name`` if it can stand in ``#include "<name>"`` safely, else InputError."""
    if not _C_INCLUDE.match(name):
        raise InputError(
            f"the C header's file name {one_line(repr(name))} cannot be written in an #include line: use ASCII "
            "letters, digits, '.', '_', '-' and '+' in the --out file name"
        )
    return name


_C_SPLIT = re.compile(r"(?<=\*)(?=/)|(?<=/)(?=\*)|(?<=\?)(?=\?)")  # between "*/", "/*", "??"


def c_comment(text) -> str:
    """``text`` as one line that can stand inside a C block comment (see the module docstring)."""
    out = "".join(ch if 0x20 <= ord(ch) < 0x7F else _escape_char(ch) for ch in str(text))
    out = _C_SPLIT.sub("\\\\", out)
    return out[:-1] + "\\u005c" if out.endswith("\\") else out  # no line splice at the end of a line


# -- ONNX --------------------------------------------------------------------------------------
def onnx_name(name: str) -> str:
    """``name`` if it is a plain ONNX node/initializer name, else InputError."""
    if not isinstance(name, str) or not _ONNX_NAME.match(name):
        raise InputError(f"{one_line(repr(name))} cannot name an ONNX node: use letters, digits, '_', '.', ':', '-'")
    return name


def onnx_text(text) -> str:
    """``text`` for an ONNX doc string or metadata value: valid UTF-8, one line."""
    return one_line(text)


# -- HTML and figures --------------------------------------------------------------------------
def html_text(text) -> str:
    """``text`` for HTML element content or a quoted attribute value."""
    return html.escape(one_line(text), quote=True)


#: matplotlib rc settings every figure is drawn under: user text is never mathtext or TeX.
FIGURE_RC = {"text.parse_math": False, "text.usetex": False}


def figure_text(text) -> str:
    """``text`` for a matplotlib title, label or legend (drawn under :data:`FIGURE_RC`)."""
    return one_line(text)

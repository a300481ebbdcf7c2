"""The one exception class for bad user input, raised where input is read and validated.

The command line turns an ``InputError`` (and the ``ValueError``/``TypeError``/``OSError`` that the
library's argument checks raise) into one line on stderr and exit status 2; anything else is a bug
in shrinknet and is reported as an internal error. ``InputError`` is a ``ValueError`` so that code
catching ``ValueError`` keeps working.
"""

from __future__ import annotations


class InputError(ValueError):
    """A file, data set or option that shrinknet cannot use; the message says what to do."""

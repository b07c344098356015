"""UserError: a mistake of the person at the command line, not a fault of dermnode.

Any room raises it with a sentence that says what is wrong and how to put it right; the top-level
``dermnode`` command (dermnode/cli.py) prints it as one line, ``dermnode: error: <sentence>``, and
exits with status 2. A bug is not a UserError: it still shows its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A wrong argument, file, folder or setting; its text is shown to the user as it is."""

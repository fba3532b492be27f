"""``python -m gdlab``: the same as the ``gdlab`` command."""
import sys

from . import main

sys.exit(main(prog="python -m gdlab"))

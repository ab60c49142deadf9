# `python -m forever_slurm`; the build copies it to the root of forever_slurm.pyz.
# Kept parseable by old Pythons (even 2.x) so that they print one clear line, not a SyntaxError.
import sys

if sys.version_info < (3, 6):
    sys.stderr.write("forever-slurm needs Python 3.6 or newer, but %s is Python %d.%d; "
                     "run it with a newer python3.\n" % (sys.executable, sys.version_info[0], sys.version_info[1]))
    sys.exit(1)

from forever_slurm import pyzcache  # noqa: E402

pyzcache.install()      # from a .pyz: modules compiled once per Python, not at every start
from forever_slurm.cli import main  # noqa: E402

sys.exit(main())

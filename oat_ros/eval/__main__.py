import sys

from oat_ros.eval.cli import main

sys.exit(main())

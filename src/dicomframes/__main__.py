import sys

from dicomframes.cli import main

sys.exit(main())

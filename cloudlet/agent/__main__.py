import sys

from cloudlet.agent.cli import main

sys.exit(main())

import sys
from pathlib import Path

here = Path(__file__).parent
for sub in ("unit", "property", "contract", "integration", "integration/openstack"):
    sys.path.insert(0, str(here / sub))

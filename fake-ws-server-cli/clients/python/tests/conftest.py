import os
import sys

# The helper and its pytest plugin sit one directory up.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

pytest_plugins = ["pytest_plugin"]

"""First-party critic plugins, installed as `milr.critics`.

Each module is a plugin registered through the same `register_critics` hook a third-party
plugin uses; they are the living examples of how to write one. Modules import only cheap
things at import time; models load on first use.
"""

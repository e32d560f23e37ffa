"""Only the optional C extension; all other metadata is in pyproject.toml.

engine/core/_policyscan.c is the fast reader of MTA-STS policy bodies. ``optional``
means a machine without a C compiler or Python headers still installs: the same
parser then runs in pure Python (engine/core/policy.py), only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "engine.core._policyscan",
            sources=["engine/core/_policyscan.c"],
            optional=True,
        )
    ]
)

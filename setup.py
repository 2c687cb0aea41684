"""The one thing pyproject.toml cannot say on Debian 12's setuptools (66): the C extension.

ntpguard.logs._cut is the log parser's fast path (~4x the pure-Python one). It is built
against the limited API, so one build serves every Python 3 from 3.9 on, and it is optional:
without a compiler the build goes on and parse.py uses its pure-Python copy of the same path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ntpguard.logs._cut",
            ["ntpguard/logs/_cut.c"],
            py_limited_api=True,  # the .c sets Py_LIMITED_API (3.9)
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
            optional=True,
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)

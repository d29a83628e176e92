"""Build the compiled hot paths (core/fast/*.pyx) and the portcullis command."""

from pathlib import Path

from setuptools import Extension, find_namespace_packages, setup

# One place for compiler directives, for every module in core/fast.
DIRECTIVES = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "embedsignature": True,
}


def extensions():
    sources = sorted(Path("core/fast").glob("*.pyx"))
    if not sources:
        return []
    from Cython.Build import cythonize

    modules = [
        Extension(
            ".".join(path.with_suffix("").parts),
            [str(path)],
            extra_compile_args=["-O3"],
        )
        for path in sources
    ]
    return cythonize(modules, compiler_directives=DIRECTIVES, quiet=True)


setup(
    name="portcullis",
    version="0.1.0",
    description="Email security gateway: SMTP proxy, spam and virus filter",
    python_requires=">=3.11",
    # Namespace packages too, so that app/templates and app/static ship.
    packages=find_namespace_packages(include=["core", "core.*", "app", "app.*"]),
    package_data={"app": ["templates/**/*", "static/**/*"]},
    include_package_data=True,
    ext_modules=extensions(),
    install_requires=[
        line.strip()
        for line in Path("requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ],
    entry_points={"console_scripts": ["portcullis = core.cli:main"]},
    zip_safe=False,
)

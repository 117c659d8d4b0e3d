"""The builtin corpus: English prose that ships with every CPython install, so the quickstart needs no network.

Documents, in this fixed order: every `pydoc_data.topics.topics` entry (sorted by topic name), then the
docstrings of a fixed list of pure-Python standard-library modules: the module docstring, then each public
function and class defined in the module (sorted by name), each class followed by its public methods and
``__init__`` (sorted by name). Docstrings are `inspect.cleandoc`-ed; texts shorter than `MIN_CHARS` are skipped.
Modules with C accelerators or platform-dependent definitions are left out, so the same CPython version gives
the same documents everywhere; `builtin_fingerprint()` records the version and the sha256 of the text.
About 1.1 MB of text in ~1,460 documents on CPython 3.11.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import platform
import sys
import warnings
from collections.abc import Iterator
from typing import Any

CORPUS_VERSION = 1  # bump when the module list or the extraction rules change
MIN_CHARS = 100
MODULES = (
    "abc", "argparse", "ast", "asyncio.base_events", "asyncio.events", "asyncio.locks", "asyncio.queues",
    "asyncio.streams", "asyncio.tasks", "base64", "bdb", "calendar", "cmd", "code", "codecs", "codeop",
    "collections", "colorsys", "concurrent.futures._base", "concurrent.futures.thread", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "difflib", "dis", "doctest", "email._policybase", "email.charset",
    "email.feedparser", "email.generator", "email.header", "email.headerregistry", "email.message", "email.parser",
    "email.policy", "email.utils", "enum", "filecmp", "fileinput", "fnmatch", "fractions", "functools", "getopt",
    "gettext", "glob", "graphlib", "gzip", "heapq", "hmac", "html", "html.parser", "http.cookiejar", "http.cookies",
    "http.server", "importlib.metadata", "inspect", "ipaddress", "json", "json.decoder", "json.encoder", "keyword",
    "linecache", "logging", "logging.handlers", "mailbox", "mimetypes", "multiprocessing.pool", "netrc", "numbers",
    "optparse", "pathlib", "pdb", "pickletools", "pkgutil", "platform", "plistlib", "pprint", "pstats",
    "py_compile", "pyclbr", "pydoc", "queue", "quopri", "random", "re", "reprlib", "runpy", "sched", "secrets",
    "shelve", "shlex", "statistics", "string", "symtable", "tabnanny", "tarfile", "textwrap", "threading", "timeit",
    "tokenize", "trace", "traceback", "types", "typing", "unittest.case", "unittest.loader", "unittest.mock",
    "unittest.runner", "unittest.suite", "urllib.parse", "urllib.robotparser", "uuid", "warnings", "wave",
    "weakref", "wsgiref.handlers", "wsgiref.simple_server", "wsgiref.validate", "xml.dom.minidom",
    "xml.sax.handler", "xml.sax.saxutils", "xml.sax.xmlreader", "xmlrpc.client", "xmlrpc.server", "zipapp",
    "zipfile", "zipimport",
)


def builtin_texts() -> Iterator[str]:
    """Every document of the builtin corpus, in its fixed order."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        text = topics[name].strip()
        if len(text) >= MIN_CHARS:
            yield text
    for module_name in MODULES:
        yield from _module_docstrings(module_name)


def _module_docstrings(module_name: str) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules and attributes (typing.io ...)
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a trimmed install; the fingerprint tells the difference
            return
        docs: list[str | None] = [module.__doc__]
        for name, obj in sorted(vars(module).items(), key=lambda item: item[0]):
            if _public_member(name, obj, module_name):
                docs += _member_docs(obj)
    for doc in docs:
        text = inspect.cleandoc(doc) if isinstance(doc, str) else ""
        if len(text) >= MIN_CHARS:
            yield text


def _public_member(name: str, obj: Any, module_name: str) -> bool:
    """Defined in Python in this module (not re-exported, not a C accelerator) and public."""
    if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
        return False
    if inspect.isfunction(obj):
        return True
    return inspect.isclass(obj) and any(inspect.isfunction(v) for v in vars(obj).values())


def _member_docs(obj: Any) -> list[str | None]:
    if inspect.isfunction(obj):
        return [obj.__doc__]
    methods = [m for n, m in sorted(vars(obj).items()) if (not n.startswith("_") or n == "__init__")
               and inspect.isfunction(m)]
    return [obj.__doc__] + [m.__doc__ for m in methods]


@functools.cache
def builtin_fingerprint() -> dict[str, Any]:
    """Python version, corpus version, document count, characters and the sha256 of the corpus text
    (each document followed by a NUL). Computed once per process (about 0.3 s)."""
    h = hashlib.sha256()
    num_docs = num_chars = 0
    for text in builtin_texts():
        h.update(text.encode("utf-8") + b"\0")
        num_docs += 1
        num_chars += len(text)
    return {"corpus_version": CORPUS_VERSION, "python": platform.python_version(),
            "implementation": sys.implementation.name, "num_docs": num_docs, "num_chars": num_chars,
            "sha256": h.hexdigest()}

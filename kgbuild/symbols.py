"""Current gene symbols for previous symbols and aliases, from NCBI's ``Homo_sapiens.gene_info.gz``.

A dataset may name a gene by an older symbol (``MARCH8``) that a graph built from newer sources names by its
current one (``MARCHF8``). :class:`SymbolMap` reads NCBI's gene_info table (``kgbuild fetch gene_info``;
columns ``Symbol`` and ``Synonyms``, ``|``-separated) and answers the current symbol of a name:

* a name that is itself a current symbol maps to itself;
* a synonym (previous symbol or alias) of exactly one gene maps to that gene's symbol;
* a synonym shared by several genes is *ambiguous* and is not mapped (it is reported instead);
* anything else is unknown.

:func:`match_names` matches names against a vocabulary (a graph's nodes, a model's genes) through the map
and reports what was matched directly, mapped, ambiguous or unknown.
"""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

#: the manifest source and file key of the table (``kgbuild/manifests/gene_info.toml``)
SOURCE, FILE_KEY = "gene_info", "human"


class SymbolError(ValueError):
    """A gene_info file that cannot be read (names the file and the problem)."""


@dataclass
class SymbolMap:
    """``current``: the current symbols; ``alias``: synonym -> its one current symbol; ``ambiguous``:
    synonym -> the several current symbols that share it (never mapped)."""

    current: set[str]
    alias: dict[str, str]
    ambiguous: dict[str, list[str]]
    source: str = "<memory>"

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, Iterable[str]]], source: str = "<memory>") -> "SymbolMap":
        """From ``(symbol, synonyms)`` pairs."""
        current: set[str] = set()
        owners: dict[str, set[str]] = {}
        for symbol, synonyms in records:
            current.add(symbol)
            for syn in synonyms:
                if syn and syn != symbol:
                    owners.setdefault(syn, set()).add(symbol)
        alias, ambiguous = {}, {}
        for syn, syms in owners.items():
            if syn in current:  # a current symbol is never re-pointed to another gene
                continue
            if len(syms) == 1:
                alias[syn] = next(iter(syms))
            else:
                ambiguous[syn] = sorted(syms)
        return cls(current, alias, ambiguous, source)

    @classmethod
    def from_gene_info(cls, path: str | os.PathLike) -> "SymbolMap":
        """Read an NCBI ``*.gene_info`` table (gzip or plain; header line starting ``#tax_id``)."""
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        records = []
        try:
            with opener(path, "rt", encoding="utf-8") as fh:
                header = fh.readline().lstrip("#").rstrip("\n").split("\t")
                try:
                    i_sym, i_syn = header.index("Symbol"), header.index("Synonyms")
                except ValueError:
                    raise SymbolError(f"{path}: not an NCBI gene_info table (no Symbol and Synonyms columns in "
                                      f"the header line)") from None
                for line in fh:
                    parts = line.rstrip("\n").split("\t")
                    if len(parts) <= max(i_sym, i_syn) or parts[i_sym] in ("", "-"):
                        continue
                    syns = [] if parts[i_syn] == "-" else parts[i_syn].split("|")
                    records.append((parts[i_sym], syns))
        except (OSError, EOFError, UnicodeDecodeError) as err:
            raise SymbolError(f"{path}: cannot read the gene_info table ({err})") from None
        if not records:
            raise SymbolError(f"{path}: the gene_info table lists no genes")
        out = cls.from_records(records, str(path))
        log.info("%s: %d current symbols, %d unambiguous synonyms, %d ambiguous", path, len(out.current),
                 len(out.alias), len(out.ambiguous))
        return out

    def lookup(self, name: str) -> str | None:
        """The current symbol of ``name`` (itself when current), or None (unknown or ambiguous)."""
        if name in self.current:
            return name
        return self.alias.get(name)


@dataclass
class SymbolMatch:
    """How names met a vocabulary: ``mapping`` renames each mapped name to its vocabulary entry."""

    matched: list[str] = field(default_factory=list)  # in the vocabulary as given
    mapping: dict[str, str] = field(default_factory=dict)  # name -> vocabulary entry through the map
    ambiguous: dict[str, list[str]] = field(default_factory=dict)  # synonym of several genes: not mapped
    unknown: list[str] = field(default_factory=list)  # neither in the vocabulary nor mapped into it

    def describe(self, shown: int = 5) -> str:
        """``24 matched, 1 mapped (MARCH8 -> MARCHF8), 0 ambiguous, 0 unknown``."""
        def some(items: list[str]) -> str:
            return ", ".join(items[:shown]) + (", ..." if len(items) > shown else "")

        mapped = f"{len(self.mapping)} mapped"
        if self.mapping:
            mapped += f" ({some([f'{a} -> {b}' for a, b in sorted(self.mapping.items())])})"
        amb = f"{len(self.ambiguous)} ambiguous"
        if self.ambiguous:
            shared = [a + ": " + "/".join(b) for a, b in sorted(self.ambiguous.items())]
            amb += f" ({some(shared)}; not mapped)"
        unk = f"{len(self.unknown)} unknown"
        if self.unknown:
            unk += f" ({some(sorted(self.unknown))})"
        return f"{len(self.matched)} matched, {mapped}, {amb}, {unk}"

    def as_dict(self) -> dict:
        return {"matched": len(self.matched), "mapped": dict(self.mapping), "ambiguous": dict(self.ambiguous),
                "unknown": list(self.unknown)}


def match_names(names: Iterable[str], vocabulary: Iterable[str], symbols: SymbolMap | None) -> SymbolMatch:
    """Match ``names`` to ``vocabulary``. A name not in it is mapped when its current symbol is in the
    vocabulary, or is the current symbol of exactly one vocabulary entry (a vocabulary that uses the old
    symbol); an ambiguous synonym is reported, never mapped. Without ``symbols`` nothing is mapped."""
    vocab = set(vocabulary)
    out = SymbolMatch()
    by_current: dict[str, set[str]] = {}
    if symbols is not None:
        for v in vocab:
            cur = symbols.lookup(v)
            if cur is not None:
                by_current.setdefault(cur, set()).add(v)
    for name in dict.fromkeys(names):
        if name in vocab:
            out.matched.append(name)
            continue
        if symbols is None:
            out.unknown.append(name)
            continue
        if name in symbols.ambiguous and name not in symbols.current:
            out.ambiguous[name] = symbols.ambiguous[name]
            continue
        cur = symbols.lookup(name)
        if cur is not None and cur in vocab:
            out.mapping[name] = cur
        elif cur is not None and len(by_current.get(cur, ())) == 1:
            out.mapping[name] = next(iter(by_current[cur]))
        else:
            out.unknown.append(name)
    return out


def resolve_gene_info(path: str | os.PathLike | None) -> Path | None:
    """``path`` when given (``"fetch"``: the cached ``kgbuild fetch gene_info`` copy, downloaded when missing);
    None when None."""
    if path is None:
        return None
    if str(path) == "fetch":
        from kgbuild.fetch import fetch

        return Path(fetch(SOURCE)[FILE_KEY])
    p = Path(path)
    if not p.exists():
        raise SymbolError(f"{p}: no such gene_info file (download it with `kgbuild fetch gene_info`)")
    return p

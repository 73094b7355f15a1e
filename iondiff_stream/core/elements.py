"""Element symbols: the one place that guesses an element from an atomic mass."""

from __future__ import annotations

import numpy as np

__all__ = ["ELEMENTS", "element_masses", "elements_from_masses"]


def _table() -> tuple[list[str], np.ndarray]:
    from MDAnalysis.guesser.tables import masses as table

    keys = [k for k in table if k.isalpha() and len(k) <= 2]
    return [k.capitalize() for k in keys], np.array([table[k] for k in keys], dtype=float)


#: element symbols known to MDAnalysis's mass table (capitalised: "Li", "Na", "F", ...)
ELEMENTS = frozenset(_table()[0])


def elements_from_masses(masses: np.ndarray, tol: float = 0.1) -> list[str]:
    """Element symbol of each mass (amu): the element whose standard mass is nearest, "" when none is within ``tol``.

    Parameters
    ----------
    masses : array_like, shape (n,)
        Atomic masses, amu (e.g. LAMMPS per-type masses).
    tol : float
        Largest accepted difference, amu.

    Returns
    -------
    list of str, length n
    """
    names, vals = _table()
    out = []
    for m in np.asarray(masses, dtype=float).reshape(-1):
        j = int(np.argmin(np.abs(vals - m)))
        out.append(names[j] if m > 0 and abs(vals[j] - m) <= tol else "")
    return out


def element_masses(symbols) -> np.ndarray:
    """Standard atomic mass (amu, ASE's table) of each element symbol, 0 for an unknown one.

    Symbols are matched case-insensitively ("LI", "li" and "Li" are lithium).

    Parameters
    ----------
    symbols : sequence of str, length n

    Returns
    -------
    ndarray, shape (n,), float64
    """
    from ase.data import atomic_masses, atomic_numbers

    out = np.zeros(len(symbols), dtype=np.float64)
    for i, s in enumerate(symbols):
        z = atomic_numbers.get(str(s).strip().capitalize())
        if z is not None:
            out[i] = atomic_masses[z]
    return out

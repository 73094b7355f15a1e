"""Units fixed at the boundary: lengths in Å, times in ps inside the package.

LAMMPS unit styles are converted on input with :func:`lammps_factors`.
"""

from __future__ import annotations

from iondiff_stream.core.errors import IonDiffStreamError

__all__ = [
    "LENGTH_UNIT",
    "TIME_UNIT",
    "A2_PER_PS_TO_CM2_PER_S",
    "KB_EV_PER_K",
    "E_CHARGE_C",
    "KB_J_PER_K",
    "lammps_factors",
]

LENGTH_UNIT = "angstrom"
TIME_UNIT = "ps"

#: 1 Å²/ps = 1e-16 cm² / 1e-12 s = 1e-4 cm²/s
A2_PER_PS_TO_CM2_PER_S = 1.0e-4
KB_EV_PER_K = 8.617333262e-5
KB_J_PER_K = 1.380649e-23
E_CHARGE_C = 1.602176634e-19

# LAMMPS unit styles: (Å per length unit, ps per time unit), as in the LAMMPS `units` manual page;
# checked against ASE's LAMMPS unit table (ase.calculators.lammps.unitconvert) in tests/test_lammps.py.
# `electron`: lengths in Bohr, but times in femtoseconds (not the atomic time unit).
_LAMMPS = {
    "metal": (1.0, 1.0),
    "real": (1.0, 1.0e-3),
    "si": (1.0e10, 1.0e12),
    "cgs": (1.0e8, 1.0e12),
    "electron": (0.52917721067, 1.0e-3),
    "micro": (1.0e4, 1.0e6),
    "nano": (10.0, 1.0e3),
}


def lammps_factors(style: str) -> tuple[float, float]:
    """Conversion factors of a LAMMPS unit style to Å and ps.

    Parameters
    ----------
    style : str
        LAMMPS ``units`` style (``metal``, ``real``, ``si``, ...). ``lj`` has no
        physical scale and is refused.

    Returns
    -------
    (length_to_A, time_to_ps) : tuple of float
        Multiply LAMMPS lengths and times by these factors.
    """
    try:
        return _LAMMPS[style]
    except KeyError:
        raise UnitStyleError(
            f"LAMMPS unit style {style!r} has no conversion to Å/ps; "
            f"supported: {', '.join(sorted(_LAMMPS))}"
        ) from None


class UnitStyleError(IonDiffStreamError, ValueError):
    """A LAMMPS unit style without a physical length/time scale (e.g. ``lj``)."""

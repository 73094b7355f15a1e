"""The result of one run's offline analysis: :class:`RunAnalysis`, whose ``summary`` (``summary.json``) is
built from its result objects' ``to_dict()`` and nothing else.

Each part carries its own units (in the names), statuses and intervals:

* :class:`~iondiff_stream.analysis.transport.TransportResult` — D*, D_σ, Haven ratio, conductivities, each
  with ``<name>_status``/``<name>_reason``; a number the run cannot support is None on the object and in the
  summary alike;
* :class:`HopStatistics` — counts, frequencies and the hop/MSD consistency check of the hop table;
* :class:`~iondiff_stream.analysis.correlations.CorrelationResult` — concerted hops against the null;
* :class:`~iondiff_stream.analysis.sites.ConcertedModes` — site-based concerted modes (A→B with B→C within a
  window) on the hop detector's sites, with their frequencies;
* :class:`~iondiff_stream.analysis.distinct.DistinctOrigin` — G_d(r≈0, t)/ρ and its characteristic time;
* :class:`RunFacts` — what was analysed (frames, ions, time step, temperature, charge, inputs, store
  segments) and the run's warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from iondiff_stream.analysis.correlations import CorrelationResult
from iondiff_stream.analysis.distinct import DistinctOrigin
from iondiff_stream.analysis.hops import HopResults, JumpCorrelation, ResidenceTimes
from iondiff_stream.analysis.sites import ConcertedModes
from iondiff_stream.analysis.transport import TRANSPORT_QUANTITIES, TransportResult
from iondiff_stream.analysis.trust import TrustResult
from iondiff_stream.core.display import run_rows, summary_html, summary_text
from iondiff_stream.io import TrajectoryData

__all__ = ["HopStatistics", "RunAnalysis", "RunFacts", "transport_not_computed"]


@dataclass
class HopStatistics:
    """Numbers of one run's hop table and what they say about its transport. Units in the names.

    Attributes
    ----------
    method : str
        Hop method (``"sites"``, ``"silhouette"``, ...).
    n_sites : int or None
    site_model : str or None
        ``"density"`` or ``"framework"`` (sites attached to the framework atoms).
    n_hops, n_open_hops, n_back_hops, n_diffusive_ions : int
        Closed hops; hops still under way at the end; hops back to the site just left; ions with ≥ 1 hop.
    k_distribution : dict
        Number of ions per count of vibrational centres (silhouette method).
    mean_silhouette : float or None
    median_sigma_A : float or None
        Median vibration width, Å.
    mean_hop_length_A, max_hop_length_A : float or None
        Å.
    mean_hop_duration_ps : float or None
    hop_frequency_per_ps : float or None
        Closed hops per ion per ps.
    nu0_dilute_limit_per_ps, nu_over_nu0 : float or None
        ``6 D* / a²`` and ν over it; None when D* is not resolved.
    D_hops_cm2_s : float or None
        ``Σ l² / (6 N t)``, cm²/s.
    hop_msd_fraction : float or None
        D_hops / D*; None when D* is not resolved.
    hop_msd_fraction_ci95 : [float, float] or None
        Bootstrap over ions (the same ions for both parts).
    hop_msd_check : str
        ``"ok"``, ``"high"``, ``"low"``, ``"not available"`` or ``"not applicable: <why>"``.
    hop_correlation_factor, hop_correlation_factor_std : float or None
        f from consecutive hops of each ion (≥ 20 pairs).
    n_hop_pairs : int
    hop_frequency_effective_per_ps, D_hops_correlated_cm2_s, hop_msd_fraction_correlated : float or None
        ν f, D_hops f (cm²/s), D_hops f / D*.
    mean_residence_time_ps : float or None
        Of metastable residences (away from every reference site).
    n_metastable_residences : int
    mean_residence_time_all_ps : float or None
    metastable_distance_A : float
    """

    method: str
    n_sites: int | None
    site_model: str | None
    n_hops: int
    n_open_hops: int
    n_back_hops: int
    n_diffusive_ions: int
    k_distribution: dict[str, int]
    mean_silhouette: float | None
    median_sigma_A: float | None
    mean_hop_length_A: float | None
    max_hop_length_A: float | None
    mean_hop_duration_ps: float | None
    hop_frequency_per_ps: float | None
    nu0_dilute_limit_per_ps: float | None
    nu_over_nu0: float | None
    D_hops_cm2_s: float | None
    hop_msd_fraction: float | None
    hop_msd_fraction_ci95: list[float] | None
    hop_msd_check: str
    hop_correlation_factor: float | None
    hop_correlation_factor_std: float | None
    n_hop_pairs: int
    hop_frequency_effective_per_ps: float | None
    D_hops_correlated_cm2_s: float | None
    hop_msd_fraction_correlated: float | None
    mean_residence_time_ps: float | None
    n_metastable_residences: int
    mean_residence_time_all_ps: float | None
    metastable_distance_A: float

    def to_dict(self) -> dict[str, Any]:
        """The attributes as ``summary.json`` keys."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class RunFacts:
    """What was analysed, and the run's warnings.

    Attributes
    ----------
    n_frames, n_mobile : int
    mobile_species : list of str
    timestep_ps : float or None
        Time between analysed frames, ps.
    total_time_ps : float
    temperature_K : float or None
    charge_e : float or None
        Ionic charge used for conductivities, e.
    drift_removed : bool
        The framework's centre-of-mass drift was subtracted.
    volume_A3 : float or None
    parameters : dict
        Hop parameters.
    warnings : list of str
    extra : dict
        Facts of the input: selection, frames and time window selected, store segments, inputs.
    """

    n_frames: int
    n_mobile: int
    mobile_species: list[str]
    timestep_ps: float | None
    total_time_ps: float
    temperature_K: float | None
    charge_e: float | None
    drift_removed: bool
    volume_A3: float | None
    parameters: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The facts as ``summary.json`` keys (``extra`` flattened in)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


def transport_not_computed(reason: str = "no transport: too few frames") -> dict[str, Any]:
    """The transport keys of ``summary.json`` for a run with no :class:`TransportResult` (below 8 frames)."""
    out: dict[str, Any] = {"D_tracer_cm2_s": None, "msd_growth_ratio": None, "long_range_diffusion": None}
    for q in TRANSPORT_QUANTITIES:
        out[f"{q}_status"] = "not computed"
        out[f"{q}_reason"] = reason
    return out


@dataclass
class RunAnalysis:
    """Everything the offline analysis computed for one run.

    Attributes
    ----------
    data : TrajectoryData
        Unwrapped positions (T, n_mobile, 3) Å (in memory or a Zarr store), times ps, cell, ids.
    hops : HopResults
        Sites/centres, core states, the hop table and the site model's self-check.
    residences : ResidenceTimes
        Complete residences (with the ``metastable`` flag).
    transport : TransportResult or None
        MSD, D*, D_σ, Haven ratio, conductivities, each with its status (None below 8 frames).
    correlations : CorrelationResult or None
        Concerted groups of hops against the null.
    jumps : JumpCorrelation or None
        Correlation between consecutive hops of each ion and the correlation factor f.
    statistics : HopStatistics
    facts : RunFacts
    trust : TrustResult or None
        Hop-resolved trust of a DeePMD run (its model deviation joined to the hops), when the store holds one.
    modes : ConcertedModes or None
        Site-based concerted modes on the hop detector's sites (``"sites"`` method).
    distinct : DistinctOrigin or None
        G_d(r≈0, t)/ρ and its characteristic time (runs of 3 frames or more).
    """

    data: TrajectoryData
    hops: HopResults
    residences: ResidenceTimes
    transport: TransportResult | None
    correlations: CorrelationResult | None
    jumps: JumpCorrelation | None
    statistics: HopStatistics
    facts: RunFacts
    trust: TrustResult | None = None
    modes: ConcertedModes | None = None
    distinct: DistinctOrigin | None = None

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json``: the ``to_dict()`` of every part (a new dict at each access)."""
        return self.to_dict()

    def parts(self) -> dict[str, Any]:
        """The result objects whose ``to_dict()`` make the summary, by name (absent ones left out)."""
        out: dict[str, Any] = {"facts": self.facts, "statistics": self.statistics}
        if self.transport is not None:
            out["transport"] = self.transport
        if self.correlations is not None:
            out["correlations"] = self.correlations
        if self.trust is not None:
            out["trust"] = self.trust
        if self.modes is not None:
            out["modes"] = self.modes
        if self.distinct is not None:
            out["distinct"] = self.distinct
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every summary number, units in the key names."""
        s = self.facts.to_dict()
        s.update(self.statistics.to_dict())
        s.update(self.hops.extra.get("site_check") or {"site_check": "not applicable"})
        s.update(self.transport.to_dict() if self.transport is not None else transport_not_computed())
        if self.correlations is not None:
            s.update(self.correlations.summary())
        if self.trust is not None:
            s.update(self.trust.to_dict())
        if self.modes is not None:
            s.update(self.modes.to_dict())
        if self.distinct is not None:
            s.update(self.distinct.to_dict())
        return s

    _FOOTER = ".summary (dict of summary.json), .hops (HopResults; .hops.hops: the HopTable), .transport"

    def __repr__(self) -> str:
        return summary_text("RunAnalysis", run_rows(self), self._FOOTER)

    def _repr_html_(self) -> str:
        return summary_html("RunAnalysis", run_rows(self), self._FOOTER)


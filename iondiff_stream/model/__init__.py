"""The site model and the one hop rule, shared by the offline analysis and the live count.

* :mod:`~iondiff_stream.model.sites` — :class:`SiteModel` (sites, cores, sites attached to the framework),
  density-peak learning (:class:`SiteDensity`) and the framework's polyhedral holes.
* :mod:`~iondiff_stream.model.framework` — holes kept where ions reside, and the choice of site model.
* :mod:`~iondiff_stream.model.rule` — :class:`HopRule`, the streaming core-to-core hop rule.
* :mod:`~iondiff_stream.model.checks` — self-checks that fail when sites are missing.

Units: Å and frames (the analyses convert frames to ps).
"""

from iondiff_stream.model.checks import SiteChecks, sample_checks
from iondiff_stream.model.framework import FrameworkFrames, choose_site_model, framework_site_model
from iondiff_stream.model.rule import HopEvents, HopRule, visits
from iondiff_stream.model.sites import SiteDensity, SiteModel, SiteParameters, anchor_atoms, framework_holes

__all__ = ["SiteModel", "SiteDensity", "SiteParameters", "anchor_atoms", "framework_holes", "FrameworkFrames",
           "framework_site_model", "choose_site_model", "HopRule", "HopEvents", "visits", "SiteChecks",
           "sample_checks"]

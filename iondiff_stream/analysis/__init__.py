"""Analyses on positions and a site model: hops, transport, correlations, sites, descriptors."""

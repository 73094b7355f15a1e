"""The systems of the DeePMD examples: where their classical labels come from and how their DeePMD runs go.

``caf2``: CaF2 with 2 F vacancies (the classical rigid-ion model of ``../caf2``), files in this directory.
``agi``: alpha-AgI (the PRV rigid-ion model of ``../agi``), files in ``agi/``.

``make_training_data.py``, ``run_series.py`` and ``train_and_run.sh`` take ``--system`` (``SYSTEM=``).
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.dirname(HERE)

SYSTEMS: dict[str, dict] = {
    "caf2": {
        "dir": HERE,                                       # input.json, in.dpmd, data/, m*.pb, runs/
        "label_script": os.path.join(EXAMPLES, "caf2", "in.caf2"),
        "label_vars": {"nsteps": "0"},                     # the classical input, equilibration and production off
        "type_map": ["Ca", "F"],
        "strains": "0.98,1.0,1.02",
        "label_temperatures": "1200,1500",
        "label_every": 50,                                 # MD steps between labelled frames (2 fs: 0.1 ps)
        "label_equilibrate": 500,
        "mobile": "F",
        "temperatures": "1300,1500,1700",
        "overhead_T": 1500.0,
    },
    "agi": {
        "dir": os.path.join(HERE, "agi"),
        "label_script": os.path.join(EXAMPLES, "agi", "in.agi"),
        "label_vars": {"neq": "0", "nprod": "0", "output": "0"},   # + table (written by ../agi/potential.py)
        "type_map": ["Ag", "I"],
        "strains": "0.98,1.0,1.02",
        "label_temperatures": "400,550,700",
        "label_every": 50,                                 # 4 fs: 0.2 ps
        "label_equilibrate": 500,
        "mobile": "Ag",
        "temperatures": "450,550,650",
        "eq_model_var": "eqmodel",                         # in.dpmd equilibrates with this model, unstored
        "overhead_T": 550.0,
        "overhead_vars": {"neq": "250"},                   # 1 ps of equilibration before the timed runs
    },
}

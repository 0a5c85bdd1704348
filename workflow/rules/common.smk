# What every stage shares: the checked config, wildcard values, canonical params, and the
# library modules a rule's script runs. Each stage's own helpers live in its .smk file.

import re
from pathlib import Path

from snn_es.code_inputs import module_closure
from snn_es.config import ENCODERS as KNOWN_ENCODERS
from snn_es.config import ConfigError, canonical_json, check_config, snn_settings

try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConfigError as error:
    raise WorkflowError(str(error)) from None

DATASETS = config["enabled_datasets"]
SUBSETS = list(config["subsets"])
ENCODERS = config["encoders"]

# The library modules a rule's script runs are part of its inputs, so editing one reruns
# exactly the stages that use it (Snakemake compares small files by checksum, not mtime).
LIBRARY = Path(workflow.basedir) / "src" / "snn_es"
SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"


wildcard_constraints:
    dataset="|".join(DATASETS),
    subset="|".join(SUBSETS),
    encoder="|".join(KNOWN_ENCODERS),


def script_code(script):
    """The library modules that job script `workflow/scripts/{script}` runs: its import
    graph, transitive and including imports inside functions (snn_es.code_inputs)."""
    return [str(path) for path in module_closure(SCRIPTS / script, LIBRARY)]


def section(name):
    """A config section with its keys sorted (params compare by repr, so key order would
    otherwise rerun jobs)."""
    return canonical_json(config.get(name) or {})


def id_pattern(ids):
    """A wildcard regex matching exactly the given values ("(?!)" matches nothing)."""
    return "|".join(re.escape(i) for i in ids) or "(?!)"

# acft: audio contrastive-based fine-tuning (arXiv 2309.11895), evaluated with decoupled linear and kNN probes.
# Data path: manifest -> audio cache -> tune -> embed -> probes -> aggregate -> tables/plots/report.
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


# Snakemake reports a YAML syntax error without file or line: say where (configfiles given with --configfile
# are read before this file; `snakemake --verbose` shows the parser's line for those).
if Path("config.yaml").exists():
    with open("config.yaml") as stream:
        try:
            yaml.safe_load(
                stream
            )  # the parser's message names the file, line and column
        except yaml.YAMLError as error:
            raise WorkflowError(f"config.yaml is not valid YAML: {error}") from None


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),

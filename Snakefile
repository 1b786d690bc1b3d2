"""Workflow of the artifact: IMP runs, the analyses E2-E9 and their aggregates (and figures).

    snakemake --workflow-profile workflow/profiles/default                 # embedded default
    snakemake --workflow-profile workflow/profiles/default --configfile config/paper.yaml

See docs/workflow.md for the configuration, the DAG and the results layout.
"""

from glob import glob
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# The embedded default, unless config files are given (`--configfile`): those replace it
# rather than being layered over it (later ones are layered over earlier ones).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


check_config(config, "workflow/schemas/config.schema.yaml")
validate(config, "workflow/schemas/config.schema.yaml")
PLAN = plan_workflow(config)


onstart:
    fail_if_data_missing()


rule all:
    default_target: True
    input:
        all_targets,


localrules:
    all,


for _rules in sorted(glob(f"{workflow.basedir}/workflow/rules/*.smk")):
    if Path(_rules).name != "common.smk":

        include: _rules

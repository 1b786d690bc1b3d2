"""Workflow of the artifact: IMP runs, the analyses E2-E9 and their aggregates (and figures).

    snakemake --workflow-profile workflow/profiles/default                 # embedded default
    snakemake --workflow-profile workflow/profiles/default --configfile config/paper.yaml

See docs/workflow.md for the configuration, the DAG and the results layout. What runs is planned
by unmasking.workflow (Plan), built in workflow/rules/common.smk.
"""

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless config files are given (`--configfile`): those replace it
# rather than being layered over it (later ones are layered over earlier ones).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# The config checked, completed with the schema's defaults and planned (PLAN), paths, input
# functions and command lines: first, the rule files read them.
include: "workflow/rules/common.smk"


onstart:
    fail_if_data_missing()


rule all:
    default_target: True
    input:
        all_targets,


localrules:
    all,


include: "workflow/rules/imp.smk"
include: "workflow/rules/analyses.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"

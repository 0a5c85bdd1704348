# Cluster checks before the first submission (src/snn_es/cluster.py). Included by the
# Snakefile; does nothing unless the SLURM executor runs the workflow.

from snn_es.cluster import ClusterResourceError, check_gpu_requests


onstart:
    try:
        check_gpu_requests(workflow)
    except ClusterResourceError as error:
        raise WorkflowError(str(error)) from None

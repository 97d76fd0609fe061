"""jobs.getExecutionDetails and jobs.stages.getExecutionDetails."""

from headrace.api.call import Call


def get_execution_details(call: Call) -> dict:
    return call.services.execution_details.job(call.project, call.location, call["jobId"], call.params)


def get_stage_execution_details(call: Call) -> dict:
    return call.services.execution_details.stage(call.project, call.location, call["jobId"], call["stageId"],
                                                 call.params)


HANDLERS = {
    "jobs.getExecutionDetails": get_execution_details,
    "jobs.stages.getExecutionDetails": get_stage_execution_details,
}

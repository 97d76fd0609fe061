"""The HTTP face: routing and validation from the discovery document, one handler module
per API resource. A method of the document without a handler answers 501 UNIMPLEMENTED."""

from headrace.api import (debug, execution_details, flex_templates, jobs, messages, metrics,
                          snapshots, sql, templates, work_items, worker_messages)

HANDLERS = {}
for _module in (jobs, messages, metrics, execution_details, snapshots, worker_messages,
                work_items, debug, templates, flex_templates, sql):
    HANDLERS.update(_module.HANDLERS)

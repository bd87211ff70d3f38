"""The training flags on the project hash and the annotation counter behind them. Every change
goes through a Lua script (`backend.service.store.scripts`), so a webhook racing a worker, or two
web threads, can never queue two trainings for one project nor count one event twice."""
from __future__ import annotations

from collections.abc import Sequence

from backend.service.records import TrainingRequest
from backend.service.store.keys import StoreBase
from backend.service.store.scripts import BEGIN, COMPARE_DELETE_FIELD, COUNT, END, EVENT_TTL, REQUEST, SET_IF_RUNNING


class TrainingFlags(StoreBase):
    """Training dedupe (one queued, one running, a rerun flag) and annotation counting."""

    def request_training(self, project_id: int, new_job_id: str) -> TrainingRequest:
        """Ask for a retrain: enqueue `new_job_id`, or point at the queued or running one."""
        outcome, job_id = self._script(REQUEST)(keys=[self.key(project_id)], args=[new_job_id])
        return TrainingRequest(outcome, job_id)

    def begin_training(self, project_id: int, job_id: str) -> bool:
        """Mark `job_id` as the project's running pipeline; False (and a rerun flag) when another
        pipeline already runs."""
        outcome, _ = self._script(BEGIN)(keys=[self.key(project_id)], args=[job_id])
        return bool(outcome == "run")

    def end_pipeline(self, project_id: int, job_id: str) -> bool | None:
        """Release the running flag held by `job_id`. Returns whether events arrived during the
        run (one more run is due), or None when `job_id` was not the running pipeline."""
        result = int(self._script(END)(keys=[self.key(project_id)], args=[job_id]))
        return None if result < 0 else bool(result)

    def clear_job_field(self, project_id: int, field_name: str, job_id: str) -> bool:
        """Delete ``queued_job``/``running_job`` only if it still holds `job_id` (stale-flag repair)."""
        return bool(self._script(COMPARE_DELETE_FIELD)(keys=[self.key(project_id)], args=[field_name, job_id]))

    def set_stage_job(self, project_id: int, pipeline_id: str, stage_job: str) -> bool:
        """Record the job the running pipeline waits on next (lets a webhook spot a dead pipeline)."""
        return bool(self._script(SET_IF_RUNNING)(keys=[self.key(project_id)],
                                                 args=[pipeline_id, "stage_job", stage_job]))

    def count_annotations(self, project_id: int, n: int, every: int, events: Sequence[str] = ()) -> tuple[bool, int]:
        """Add `n` annotation events plus those of `events` (identities such as
        ``ANNOTATION_CREATED:<id>:<updated_at>``) not seen in the last EVENT_TTL seconds, so an event
        that two webhooks deliver counts once. True when the count reaches `every` (it then restarts)."""
        due, count, _ = self.count_annotation_events(project_id, n, every, events)
        return due, count

    def count_annotation_events(
        self, project_id: int, n: int, every: int, events: Sequence[str] = ()
    ) -> tuple[bool, int, int]:
        """`count_annotations` plus how many of the events were new (0: all were duplicates)."""
        keys = [self.key(project_id)] + [self.key(project_id, "event", e) for e in events]
        due, count, fresh = self._script(COUNT)(keys=keys, args=[int(n), int(every), EVENT_TTL])
        return bool(due), int(count), int(fresh)

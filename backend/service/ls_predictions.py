"""Writing predictions and managing model versions in Label Studio (the prediction half of
:class:`backend.service.ls_client.LabelStudioClient`). Creating calls are never retried (a retry
could import twice); deleting a model version is idempotent, so it is.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backend.service.ls_session import LabelStudioSession

__all__ = ["PredictionWrites", "prediction_entry"]


def prediction_entry(p: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Label Studio takes for one prediction (``task``, ``result``, optional ``score`` and
    ``model_version``); ValueError for a malformed one."""
    try:
        task = int(p["task"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"prediction without an integer 'task': {dict(p)!r:.200}") from None
    result = p.get("result", [])
    if not isinstance(result, list):
        raise ValueError(f"prediction for task {task}: 'result' must be a list")
    entry: dict[str, Any] = {"task": task, "result": result}
    if p.get("score") is not None:
        score = float(p["score"])
        if not math.isfinite(score):
            raise ValueError(f"prediction for task {task}: score {score} is not finite")
        entry["score"] = score
    if p.get("model_version") is not None:
        entry["model_version"] = str(p["model_version"])
    return entry


class PredictionWrites(LabelStudioSession):
    """Pushing predictions, listing and deleting model versions."""

    _prediction_entry = staticmethod(prediction_entry)

    def import_predictions(
        self,
        project_id: int,
        predictions: Sequence[Mapping[str, Any]],
        batch_size: int = 50_000,
        timeout: float | None = None,
    ) -> int:
        """Bulk-create predictions (``POST /api/projects/<id>/import/predictions``), in batches.

        Each entry: ``{"task": id, "result": [...], "score": float, "model_version": str}``.
        Returns the number created. Not retried (a retry could import a batch twice); on an error
        the batches before it are already in (and on a client timeout LS may still finish it).

        Keep batches large: LS 1.23.2 recomputes the counters of *every* task of the project after
        each request (~5 s per request on a 10k-task project, whatever the batch size), so 10k
        predictions take ~6 s in one request and ~30-50 s in batches of 1000. ``timeout`` defaults
        to ``max(client timeout, 60 s + 5 ms per prediction)``.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        entries = [prediction_entry(p) for p in predictions]
        created = 0
        for start in range(0, len(entries), batch_size):
            created += self._import_batch(project_id, entries[start : start + batch_size], timeout)
        return created

    def _import_batch(self, project_id: int, batch: list[dict[str, Any]], timeout: float | None) -> int:
        """One ``import/predictions`` request, not retried; how many LS says it created."""
        options = self._request_options(
            retry=False, timeout=timeout if timeout is not None else max(self.timeout, 60 + 0.005 * len(batch))
        )
        response = self._call(
            f"import {len(batch)} predictions into project {project_id}",
            # plain dicts, sent as they are (the SDK's PredictionRequest models would add null fields)
            lambda: self._sdk.projects.import_predictions(
                id=int(project_id), request=batch, request_options=options  # type: ignore[arg-type]
            ),
        )
        count = getattr(response, "created", None)
        return int(count) if count is not None else len(batch)

    def create_predictions(self, predictions: Sequence[Mapping[str, Any]], workers: int = 4) -> int:
        """Create predictions one ``POST /api/predictions/`` each, `workers` at a time; returns how
        many. For a few dozen (a fast update's top-K): LS 1.23.2 answers one in ~21 ms, where a bulk
        import costs ~5 s per request on a 10k-task project (it recounts every task). Not retried."""
        entries = [prediction_entry(p) for p in predictions]
        if not entries:
            return 0

        def create(entry: dict[str, Any]) -> None:
            self._raw(f"create a prediction for task {entry['task']}", "POST", "api/predictions/",
                      json_body=entry, retry=False)

        if workers <= 1 or len(entries) == 1:
            for e in entries:
                create(e)
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(entries))) as pool:
                list(pool.map(create, entries))
        return len(entries)

    def model_versions(self, project_id: int) -> dict[str, int]:
        """``{model_version: predictions}`` of the project (``GET /api/projects/<id>/model-versions/``)."""
        what = f"list the model versions of project {project_id}"
        payload = self._json(self._raw(what, "GET", f"api/projects/{int(project_id)}/model-versions/"), what)
        return {str(k): int(v) for k, v in payload.items()} if isinstance(payload, dict) else {}

    def delete_model_version(self, project_id: int, version: str, timeout: float | None = None) -> int:
        """Delete every prediction of one model version in bulk; returns how many. LS 1.23.2 takes
        ~2.4 ms per prediction (tests/integration/test_webhook_triggers.py), so ``timeout`` defaults
        to ``max(client timeout, 120 s)``; idempotent, so retried. It also clears the project's
        ``model_version`` when that is the version deleted: never delete the serving one."""
        if not version or not isinstance(version, str):
            raise ValueError("model_version must be a non-empty string")
        what = f"delete the predictions of model version {version!r} in project {project_id}"
        response = self._raw(what, "DELETE", f"api/projects/{int(project_id)}/model-versions/",
                             json_body={"model_version": version}, timeout=timeout or max(self.timeout, 120.0))
        payload = self._json(response, what)
        return int(payload.get("deleted_predictions", 0)) if isinstance(payload, dict) else 0

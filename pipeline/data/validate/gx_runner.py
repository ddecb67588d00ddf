"""The Great Expectations machinery: one ephemeral context that runs a suite on a pandas frame per call.

Kept apart from the checks themselves so that what is checked (expectations.py) reads without GX's setup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# frame -> the column GX reports offending entries by
INDEX_COLUMN = {"rows": "row", "per_column": "column", "classes": "class", "content": "row", "drift": "class"}


def _import_gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


class GxRunner:
    """One ephemeral GX context; each (split, frame) is a suite + validation definition on a pandas batch."""

    DOCS_SITE = "pipeline_docs"

    def __init__(self, docs_dir: Path | None = None):
        gx = _import_gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.datasource = self.context.data_sources.add_pandas("fmnist")
        self.batch_defs: dict[str, Any] = {}
        self.docs_dir = docs_dir
        if docs_dir is not None:
            self.context.add_data_docs_site(site_name=self.DOCS_SITE, site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(Path(docs_dir).resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            })

    def _batch_definition(self, frame: str):
        if frame not in self.batch_defs:
            asset = self.datasource.add_dataframe_asset(frame)
            self.batch_defs[frame] = asset.add_batch_definition_whole_dataframe(f"{frame}_all")
        return self.batch_defs[frame]

    def run(self, split: str, frame: str, df, expectations: list, max_examples: int):
        gx = self.gx
        name = f"{split}.{frame}"
        suite = self.context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        vd = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=self._batch_definition(frame), suite=suite))
        result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": max_examples}
        if frame in INDEX_COLUMN:
            result_format["unexpected_index_column_names"] = [INDEX_COLUMN[frame]]
        return vd.run(batch_parameters={"dataframe": df}, result_format=result_format)

    def build_docs(self) -> None:
        if self.docs_dir is not None:
            self.context.build_data_docs(site_names=[self.DOCS_SITE])

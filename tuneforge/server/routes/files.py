"""Files: upload (validated like `tuneforge data validate`), list, get, content, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from tuneforge.errors import UserError
from tuneforge.server import uploads
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.protocol import FileDeleted, FileList, FileObject
from tuneforge.store import files
from tuneforge.store.tables import File

router = APIRouter(prefix="/v1/files", tags=["files"])


def to_api(row: File) -> FileObject:
    return FileObject(id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename,
                      purpose=row.purpose)


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"], "properties": {
        "file": {"type": "string", "format": "binary"}, "purpose": {"type": "string", "enum": list(files.PURPOSES)}},
}}}}}


@router.post("", response_model=FileObject, openapi_extra=UPLOAD_BODY)
async def upload(request: Request, state: StateDep, project: ProjectDep):
    """Upload a file (multipart: `file`, `purpose`): written to disk as it arrives, capped, removed on any failure."""
    with files.incoming() as part:
        form = await uploads.read_form(request, part.write, file_field="file", limit=state.settings.max_upload_bytes)
        purpose = form.fields.get("purpose")
        for name, value in (("file", form.filename), ("purpose", purpose)):
            if value is None:
                raise UserError(f"Missing required parameter: '{name}'.", param=name,
                                code="missing_required_parameter")

        def store() -> File:
            with state.db.session() as s:
                row = files.create_from(s, part, project_id=project.id, filename=form.filename or "upload.jsonl",
                                        purpose=purpose)
            part.kept = True
            return row

        row = await run_in_threadpool(store)
    return to_api(row)


@router.get("", response_model=FileList)
def list_files(state: StateDep, project: ProjectDep, purpose: str | None = None,
               limit: Annotated[int, Query(ge=1, le=10000)] = 10000, after: str | None = None,
               order: Literal["asc", "desc"] = "desc"):
    with state.db.session() as s:
        rows = files.list_(s, project_id=project.id, purpose=purpose, after=after, limit=limit + 1, order=order)
    data = [to_api(r) for r in rows[:limit]]
    return FileList(data=data, has_more=len(rows) > limit, first_id=data[0].id if data else None,
                    last_id=data[-1].id if data else None)


@router.get("/{file_id}", response_model=FileObject)
def get_file(state: StateDep, project: ProjectDep, file_id: str):
    with state.db.session() as s:
        return to_api(files.get(s, file_id, project_id=project.id))


@router.get("/{file_id}/content")
def file_content(state: StateDep, project: ProjectDep, file_id: str):
    with state.db.session() as s:
        row = files.get(s, file_id, project_id=project.id)
    return FileResponse(row.path, media_type="application/jsonl", filename=row.filename)


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(state: StateDep, project: ProjectDep, file_id: str):
    with state.db.session() as s:
        files.delete(s, file_id, project_id=project.id)
    return FileDeleted(id=file_id)

"""Files: upload (validated like `tuneforge data validate`), list, get, content, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.server.errors import TooLarge
from tuneforge.server.protocol import FileDeleted, FileList, FileObject
from tuneforge.store import files
from tuneforge.store.tables import File

router = APIRouter(prefix="/v1/files", tags=["files"])


def to_api(row: File) -> FileObject:
    return FileObject(id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename,
                      purpose=row.purpose)


@router.post("", response_model=FileObject)
async def upload(state: StateDep, project: ProjectDep, file: UploadFile, purpose: Annotated[str, Form()]):
    limit = state.settings.max_upload_bytes
    chunks, size = [], 0
    while chunk := await file.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"File is over the {limit // (1 << 20)} MB upload limit: split it or raise "
                           "--max-upload-mb.", param="file", code="file_too_large")
        chunks.append(chunk)
    def store() -> File:
        with state.db.session() as s:
            return files.create(s, project_id=project.id, filename=file.filename or "upload.jsonl",
                                purpose=purpose, content=b"".join(chunks))

    return to_api(await run_in_threadpool(store))


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

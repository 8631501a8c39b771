"""The baseline for the API's overhead: a bare FastAPI endpoint that reads a multipart upload,
hashes it and answers 202, served by uvicorn in one process with the options `contrackt api` uses.

    .venv/bin/python -m bench.load.bare --port 8765
"""

from __future__ import annotations

import argparse
import hashlib

from fastapi import FastAPI, UploadFile


def create_app() -> FastAPI:
    app = FastAPI(openapi_url=None)

    @app.post("/upload", status_code=202)
    async def upload(file: UploadFile) -> dict[str, object]:
        data = await file.read()
        return {"status": "pending", "document_sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_config=None, access_log=False, proxy_headers=False)


if __name__ == "__main__":
    main()

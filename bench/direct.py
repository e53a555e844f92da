"""The baseline for small calls: the spec's own architecture, one gRPC process with Faker in
the handler (`python -m bench.direct PORT`). `make bench smallcalls` runs it beside the
services in the same sitting, with the same client."""

from __future__ import annotations

import asyncio
import sys
import uuid

import grpc
import orjson
from faker import Faker

from bench.naive import carts_from
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc


class Direct(pb_grpc.TestDataServiceServicer):
    """GenerateData only: carts made in the handler, answered at once."""

    def __init__(self) -> None:
        self.faker = Faker("en_US")

    async def GenerateData(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        self.faker.seed_instance(request.seed)
        records = carts_from(self.faker, request.count or 10)
        return pb.GenerateResponse(
            request_id=request.request_id or f"req-{uuid.uuid4().hex}",
            success=True,
            data=orjson.dumps(records).decode(),
            record_count=len(records),
        )


async def serve(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_TestDataServiceServicer_to_server(Direct(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))

"""The HTTP edge, on aiohttp's documented API: the one front (`front`), aiohttp requests and answers
to omproxy's and back (`convert`), forwarding to the upstream GMS (`forward`) through aiohttp's
ClientSession (`upstream`)."""

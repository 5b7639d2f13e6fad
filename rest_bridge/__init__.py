"""rest_bridge: the documented REST API (SPEC §2), mapped 1:1 onto the gateway and vault gRPC
services. `create_app` in `rest_bridge.app`; `python -m rest_bridge` serves it."""

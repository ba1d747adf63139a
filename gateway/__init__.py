"""The HTTP gateway (`saga gateway`): the order API and the saga runner behind it.

Public entry points, imported from their modules (not re-exported here, so that a
command that needs one of them does not load FastAPI for the others):

- `gateway.app.create_app(settings, ...)`: the FastAPI app and its lifespan;
- `gateway.main.run_gateway(env)`: what `saga gateway` runs;
- `gateway.settings.GatewaySettings`: its settings, from the environment;
- `gateway.metrics.GatewayMetrics`: its Prometheus registry.

The order saga, its participants' clients and its model are the `orders` package's.
"""

__all__: list[str] = []

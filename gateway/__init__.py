"""The HTTP gateway (`saga gateway`): the order API and the saga runner behind it.

Public entry points, imported from their modules (not re-exported here, so that the
recovery daemon, which needs only the order saga and its participant clients, does not
load FastAPI):

- `gateway.app.create_app(settings, ...)`: the FastAPI app and its lifespan;
- `gateway.main.run_gateway(env)`: what `saga gateway` runs;
- `gateway.settings.GatewaySettings`: its settings, from the environment;
- `gateway.metrics.GatewayMetrics`: its Prometheus registry;
- `gateway.order_saga.order_saga(participants)`: the order saga's definition;
- `gateway.participants.Participants`: the gRPC clients of the three services.
"""

__all__: list[str] = []

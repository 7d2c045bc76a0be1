from ferry.infra import service
from services.gateway.bootstrap import main

service.run("gateway", main)

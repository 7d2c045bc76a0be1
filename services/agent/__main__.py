from ferry.infra import service
from services.agent.bootstrap import main

service.run("agent", main)

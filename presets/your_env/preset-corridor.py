"""DQN on the corridor in corridor.py: the level names the module and class, "module:Class"."""
from rl_coach.agents.dqn_agent import DQNAgentParameters
from rl_coach.base_parameters import VisualizationParameters
from rl_coach.core_types import EnvironmentEpisodes, EnvironmentSteps
from rl_coach.environments.gym_environment import GymVectorEnvironment
from rl_coach.graph_managers.basic_rl_graph_manager import BasicRLGraphManager
from rl_coach.graph_managers.graph_manager import ScheduleParameters

schedule_params = ScheduleParameters()
schedule_params.improve_steps = EnvironmentSteps(3000)
schedule_params.steps_between_evaluation_periods = EnvironmentEpisodes(10)
schedule_params.evaluation_steps = EnvironmentEpisodes(1)
schedule_params.heatup_steps = EnvironmentSteps(200)

env_params = GymVectorEnvironment(level="corridor:Corridor")
env_params.additional_simulator_parameters = {"length": 8}

graph_manager = BasicRLGraphManager(
    agent_params=DQNAgentParameters(),
    env_params=env_params,
    schedule_params=schedule_params,
    vis_params=VisualizationParameters(),
)

"""One DQN training step (DQNAgent.learn_from_batch) as a single bound graph.

mxnet and rl_coach are imported inside the methods: smrl_coach.fast_coach imports this
module while rl_coach is being imported, before it has chosen MXNet's engine.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from smrl_coach.adam import apply_update
from smrl_coach.executors import NotCovered, arg_views, bind, output_views, run, to_f32
from smrl_coach.network_graphs import NetworkGraphs

MAX_EXECUTORS = 4     # bound batch shapes; one more and all are dropped (then bound again as seen)


class DQNStep:
    """One DQN training step as a single bound graph over the online and target networks.

    Coach's DQNAgent.learn_from_batch runs the target network on the next states and the
    online network on the states (two forward passes, two device-to-host copies), loops
    over the batch in Python to put r + discount * (1 - done) * max_a Q'(s', a) in place
    of Q(s, a) for the action taken, and then trains the online network on the states and
    those targets (a third forward pass). This graph does the same in one forward and
    backward pass:

        q      = online(states)                     (the forward pass that is trained)
        q_next = BlockGrad(target(next_states))
        y      = float32(r + c * float64(max_a q_next))     c = (1 - done) * discount
        td     = where(action taken, y, BlockGrad(q))
        loss   = QHeadLoss(q, td)                   (Coach's own loss block)

    The target arithmetic is done in float64 from the same float64 r and c numpy computes,
    then rounded to float32, as Coach's loop does. For the actions not taken the target is
    the online network's own prediction, as in Coach (there it comes from the separate
    forward pass, with the same weights and the same operators, so the same values): their
    error and gradient are exactly zero in both.
    """

    def __init__(self, online: NetworkGraphs, target: NetworkGraphs) -> None:
        import mxnet as mx
        from rl_coach.architectures.mxnet_components.heads.q_head import QHeadLoss
        if online.n_out != 1 or target.n_out != 1 or len(online.input_names) != 1 \
                or len(online.arch.losses) != 1 or not isinstance(online.arch.losses[0], QHeadLoss):
            raise NotCovered("not a plain Q network")
        self.online, self.target = online, target
        self.key = online.embedders[0]
        q = online.out[0]
        q_next = mx.sym.BlockGrad(target.out(**{target.input_names[0]: mx.sym.var("smrl_next_state")})[0])
        r = mx.sym.var("smrl_reward", dtype="float64")
        c = mx.sym.var("smrl_continue", dtype="float64")
        mask = mx.sym.var("smrl_action_taken")
        y = mx.sym.cast(r + c * mx.sym.cast(mx.sym.max(q_next, axis=1), dtype="float64"), dtype="float32")
        td = mx.sym.where(mask, mx.sym.broadcast_like(mx.sym.expand_dims(y, axis=1), q), mx.sym.BlockGrad(q))
        loss = online.arch.losses[0](q, td)
        loss = loss[0] if isinstance(loss, (list, tuple)) else loss
        self.symbol = mx.sym.Group([mx.sym.MakeLoss(mx.sym.add_n(loss)), mx.sym.BlockGrad(loss), mx.sym.BlockGrad(td)])
        self.state_name = online.input_names[0]
        self.input_names = [self.state_name, "smrl_next_state", "smrl_reward", "smrl_continue", "smrl_action_taken"]
        self.params = dict(target.params)
        self.params.update(online.params)
        self.execs: dict[tuple, Any] = {}

    def _bind(self, batch: int, state_shape: tuple, n_actions: int) -> Any:
        inputs = {
            self.state_name: ((batch,) + state_shape, np.float32),
            "smrl_next_state": ((batch,) + state_shape, np.float32),
            "smrl_reward": ((batch,), np.float64),
            "smrl_continue": ((batch,), np.float64),
            "smrl_action_taken": ((batch, n_actions), np.float32),
        }
        # only the online network trains; the target network's gradients stay unbound
        return bind(self.symbol, self.online.ctx, inputs, self.params, self.online.params)

    def _columns(self, batch: Any):
        """states, next states, actions, rewards and game-overs of the batch in one pass
        over its transitions (Coach's Batch makes five); the same arrays Batch returns."""
        key = self.key
        try:
            rows = [(t._state[key], t._next_state[key], t._action, t._reward, t._game_over)
                    for t in batch.transitions]
        except (KeyError, TypeError):
            rows = None
        columns = None if rows is None else list(zip(*rows))
        if columns is None or any(None in column for column in columns[2:]):
            keys = [key]
            return (to_f32(batch.states(keys)[key]), to_f32(batch.next_states(keys)[key]), batch.actions(),
                    batch.rewards(), batch.game_overs())
        states, next_states, actions, rewards, game_overs = columns
        # float64 observations rounded to float32 once, as nd.array would round them
        return (np.array(states, dtype=np.float32), np.array(next_states, dtype=np.float32),
                np.array(actions), np.array(rewards), np.array(game_overs))

    def run(self, agent: Any, batch: Any):
        """What learn_from_batch returns: (loss, [loss], unclipped gradient norm)."""
        states, next_states, actions, rewards, game_overs = self._columns(batch)
        n = len(states)
        n_actions = self.online.arch.model.output_heads[0].num_actions
        token = (self.online.token, self.target.token)
        key = (n, states.shape[1:], n_actions)
        entry = self.execs.get(key)
        if entry is None or entry[0] != token:
            if len(self.execs) > MAX_EXECUTORS:
                self.execs.clear()
            entry = self.execs[key] = (token, self._bind(n, states.shape[1:], n_actions))
        ex = entry[1]
        views = arg_views(ex, self.input_names)
        views[self.state_name][...] = states
        views["smrl_next_state"][...] = next_states
        views["smrl_reward"][...] = rewards
        views["smrl_continue"][...] = (1.0 - game_overs) * agent.ap.algorithm.discount
        mask = views["smrl_action_taken"]
        mask[...] = 0.0
        mask[np.arange(n), actions] = 1.0
        run(ex, True)
        _, loss, td_targets = output_views(ex)
        agent.q_values.add_sample(np.array(td_targets))   # Coach logs the filled-in targets
        (loss,) = loss.reshape(-1)   # asscalar()
        norm = apply_update(self.online.arch, fresh=False)
        return loss, [loss], norm

"""The compute worker's rebuild, snapshot, resize and cold migration handlers.

A mixin of :class:`fabric.compute.manager.ComputeManager` (same collaborators, same
rules): every handler moves the instance by compare-and-swap from the task the API
(or the previous host) set, is safe to run again on a redelivered message, and ends
the server at rest: ACTIVE/SHUTOFF, VERIFY_RESIZE, or ERROR with a fault.

A resize or cold migration (``fabric.compute.migrations`` holds its row) goes:

1. source ``resize_instance``: the scheduler claims the destination (a call), the
   guest is powered off and set aside, its disk flattened into one file and uploaded
   to the objectstore, the NICs unplugged; then one transaction swaps the server's host
   to the destination and stages ``finish_resize`` to it in the outbox;
2. destination ``finish_resize``: the ports are bound here and plugged, the disk is
   downloaded, the guest created with the new flavor: VERIFY_RESIZE;
3. ``confirm_resize`` on the source drops the set-aside guest and gives its claim back;
   or ``revert_resize`` on the destination destroys the new guest, gives its claim back
   and (outbox) hands the server to the source, whose ``finish_revert_resize`` brings
   the set-aside guest back with the old flavor.

A server deleted before its move is confirmed or reverted (or after it failed) is torn
down on its host, which ends the move (both claims and the quota given back once, by the
migration's compare-and-swap) and (outbox) has the source drop its set-aside guest
(``drop_set_aside``).

Why the objectstore carries the disk: hosts share no filesystem and need no path to
each other (no SSH keys, no port open between compute hosts), every host already
reaches the objectstore with the image service's credential to fetch images, and a
finished upload is durable, so a redelivered ``finish_resize`` downloads it again.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fabric.compute import instance_actions, migrations, states
from fabric.compute.faults import record_fault
from fabric.context import RequestContext
from fabric.db.models import Image
from fabric.db.retry import is_connection_error
from fabric.db.types import utcnow
from fabric.exception import InstanceStateConflict, NotFound, NoValidHost
from fabric.virt.driver import PowerState

LOG = logging.getLogger(__name__)


def _resting(power: PowerState | int) -> str:
    """The vm_state a moved or restored guest rests in: active when running, else stopped."""
    return states.ACTIVE if int(power) == int(PowerState.RUNNING) else states.STOPPED


class MovesMixin:
    """Rebuild, snapshot, resize and migrate on :class:`~fabric.compute.manager.ComputeManager`."""

    db: Any
    driver: Any
    host: str
    network: Any
    addresses: Any
    images: Any
    moves: Any
    disks: Any
    compute_settings: Any
    settings: Any

    # --- shared -------------------------------------------------------------------

    def _failed(self, ctx: RequestContext, instance_id: str, what: str, exc: Exception, task: str) -> None:
        """A failed rebuild, snapshot, confirm or revert: a fault, the server in error (its
        guest's power recorded), the action finished with the error."""
        if is_connection_error(exc):
            raise exc  # not the guest's failure: the message is handled again when the database is back
        LOG.warning("%s of instance %s failed: %s", what, instance_id, exc)
        record_fault(self.db, instance_id, exc, self.host)
        states.settle(self.db, self.driver, instance_id, task, states.ERROR)
        instance_actions.finish(self.db, ctx, instance_id, instance_actions.ERROR, str(exc))

    def _move_failed(self, ctx: RequestContext, instance_id: str, exc: Exception) -> None:
        if is_connection_error(exc):
            raise exc
        LOG.warning("move of instance %s failed on %s: %s", instance_id, self.host, exc)
        migrations.fail_move(self.db, instance_id, exc, self.host)
        instance_actions.finish(self.db, ctx, instance_id, instance_actions.ERROR, str(exc))

    def _plug_here(self, ctx: RequestContext, instance: dict) -> list[dict]:
        """Bind the server's ports to this host and plug them; its NICs as plugged here."""
        vifs = [dict(v) for v in instance.get("network_info") or []]
        for vif in vifs:
            self.addresses.bind_to_host(ctx, instance, vif, self.host)
            vif.update(self.network.plug(ctx, self.host, vif))
        return vifs

    def _unplug_here(self, ctx: RequestContext, instance: dict) -> None:
        for vif in instance.get("network_info") or []:
            self.network.unplug(ctx, self.host, vif)

    # --- rebuild ------------------------------------------------------------------

    def rebuild_instance(self, ctx: RequestContext, instance_id: str, image_id: str) -> None:
        """Re-create the guest from ``image_id`` (the API recorded it on the server) on the same
        host and NICs (addresses kept): rebuilding -> active (stopped if it was stopped)."""
        try:
            instance = states.compare_and_swap(self.db, instance_id, {"task_state": states.REBUILDING,
                                                                      "host": self.host, "image_id": image_id},
                                               task_state=states.REBUILDING)
        except (NotFound, InstanceStateConflict) as exc:
            LOG.info("not rebuilding instance %s: %s", instance_id, exc)
            return
        try:
            self.driver.destroy(instance_id)
            vifs = instance.get("network_info") or []
            self.driver.spawn(self._guest_spec(ctx, instance, vifs))
            if instance["vm_state"] == states.STOPPED:
                self.driver.power_off(instance_id)
            power = self.driver.get_info(instance_id).power_state
            states.compare_and_swap(self.db, instance_id, {"task_state": states.REBUILDING, "host": self.host},
                                    vm_state=_resting(power), task_state=None, power_state=int(power),
                                    launched_at=utcnow())
        except Exception as exc:  # noqa: BLE001 - every failure must end in a resting state
            self._failed(ctx, instance_id, "rebuild", exc, states.REBUILDING)
            return
        instance_actions.finish(self.db, ctx, instance_id, instance_actions.SUCCESS)
        LOG.info("instance %s rebuilt from image %s", instance_id, image_id)

    # --- snapshot -----------------------------------------------------------------

    def snapshot_instance(self, ctx: RequestContext, instance_id: str, image_id: str) -> None:
        """Upload the guest's disk as the data of the queued image ``image_id``: the image goes
        saving -> active; the server rests as it was. A failure deletes the image."""
        try:
            states.compare_and_swap(self.db, instance_id, {"task_state": states.IMAGE_SNAPSHOT, "host": self.host},
                                    task_state=states.IMAGE_SNAPSHOT)
        except (NotFound, InstanceStateConflict) as exc:
            LOG.info("not snapshotting instance %s: %s", instance_id, exc)
            return
        work = Path(self.settings.default.data_dir) / "snapshots"
        try:
            with self.db.begin() as session:
                image = session.get(Image, image_id)
                if image is None or image.status not in ("queued", "saving"):
                    raise NotFound(kind="Queued image", ident=image_id)
                disk_format = image.disk_format or "qcow2"
                session.execute(sa.update(Image).where(Image.id == image_id, Image.status == "queued")
                                .values(status="saving"))
            work.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=work) as scratch:
                target = str(Path(scratch) / "disk")
                self.driver.snapshot(instance_id, target, disk_format)
                facts = self.disks.put_image(image_id, target)
            with self.db.begin() as session:
                session.execute(sa.update(Image).where(Image.id == image_id, Image.status == "saving")
                                .values(status="active", **facts))
        except Exception as exc:  # noqa: BLE001
            if is_connection_error(exc):
                raise
            with self.db.begin() as session:  # Nova deletes a snapshot that failed
                session.execute(sa.update(Image).where(Image.id == image_id, Image.status.in_(("queued", "saving")))
                                .values(status="killed"))
            LOG.warning("snapshot of instance %s failed: %s", instance_id, exc)
            record_fault(self.db, instance_id, exc, self.host)
            states.settle(self.db, self.driver, instance_id, states.IMAGE_SNAPSHOT)
            instance_actions.finish(self.db, ctx, instance_id, instance_actions.ERROR, str(exc))
            return
        states.settle(self.db, self.driver, instance_id, states.IMAGE_SNAPSHOT)
        instance_actions.finish(self.db, ctx, instance_id, instance_actions.SUCCESS)
        LOG.info("instance %s snapshotted into image %s", instance_id, image_id)

    # --- resize and cold migration: the source's half ------------------------------

    def resize_instance(self, ctx: RequestContext, instance_id: str, migration_id: str) -> None:
        """On the source: claim a destination, set the guest aside, ship its disk, hand the server over."""
        try:
            instance = states.compare_and_swap(
                self.db, instance_id, {"task_state": (states.RESIZE_PREP, states.RESIZE_MIGRATING),
                                       "host": self.host}, task_state=states.RESIZE_PREP)
            move = migrations.get(self.db, migration_id)
        except (NotFound, InstanceStateConflict) as exc:
            LOG.info("not moving instance %s: %s", instance_id, exc)
            return
        try:
            dest = self.moves.claim_destination(ctx, migration_id)
        except NoValidHost as exc:
            # Nothing was claimed or touched: the server rests where it was, the fault says why.
            self._no_destination(ctx, instance_id, migration_id, exc)
            return
        except Exception as exc:  # noqa: BLE001
            self._move_failed(ctx, instance_id, exc)
            return
        set_aside = False
        try:
            states.compare_and_swap(self.db, instance_id, {"task_state": states.RESIZE_PREP, "host": self.host},
                                    task_state=states.RESIZE_MIGRATING)
            disk = self.driver.migrate_disk_and_power_off(instance_id, self.compute_settings.guest_shutdown_timeout)
            set_aside = True
            if disk is not None:
                self.disks.put_move_disk(migration_id, disk)
            if dest != self.host:
                self._unplug_here(ctx, instance)
            with self.db.begin() as session:
                handed = migrations.advance(session, migration_id, migrations.MIGRATING,
                                            status=migrations.POST_MIGRATING)
                if not handed or not states.swap(session, instance_id, {"task_state": states.RESIZE_MIGRATING,
                                                                        "host": self.host},
                                                 host=dest, task_state=states.RESIZE_MIGRATED):
                    raise InstanceStateConflict(instance=instance_id, attr="task_state/migration",
                                                actual="moved on", expected=states.RESIZE_MIGRATING)
                staged = self.moves.stage(session, "compute.finish_resize", ctx, host=dest, instance_id=instance_id,
                                          migration_id=migration_id, disk_sent=disk is not None)
        except Exception as exc:  # noqa: BLE001
            if set_aside and not is_connection_error(exc):
                self._restore_after_failed_handover(instance_id, move)
            self._move_failed(ctx, instance_id, exc)
            return
        LOG.info("instance %s handed over from %s to %s (migration %s)", instance_id, self.host, dest, migration_id)
        try:
            self.moves.send(staged)
        except Exception as exc:  # noqa: BLE001 - unroutable: no worker serves the destination
            self._move_failed(ctx, instance_id, exc)

    def _no_destination(self, ctx: RequestContext, instance_id: str, migration_id: str, exc: Exception) -> None:
        LOG.info("no destination for instance %s: %s", instance_id, exc)
        record_fault(self.db, instance_id, exc, self.host)
        move = migrations.get(self.db, migration_id)
        with self.db.begin() as session:
            if migrations.advance(session, migration_id, migrations.PRE_MIGRATING, status=migrations.FAILED):
                project_id = states.get_instance(self.db, instance_id)["project_id"]
                migrations.give_back_quota(session, project_id,
                                           migrations.quota_beyond(move["new_flavor"], move["old_flavor"]))
        states.settle(self.db, self.driver, instance_id, states.RESIZE_PREP)
        instance_actions.finish(self.db, ctx, instance_id, instance_actions.ERROR, str(exc))

    def _restore_after_failed_handover(self, instance_id: str, move: dict) -> None:
        """Bring the set-aside guest back on the source (best effort), so the server in error
        still has its guest here."""
        try:
            self.driver.finish_revert_migration(instance_id, power_on=move["old_vm_state"] == states.ACTIVE)
        except Exception:  # noqa: BLE001
            LOG.exception("could not bring back the guest of instance %s after a failed move", instance_id)

    # --- the destination's half -----------------------------------------------------

    def finish_resize(self, ctx: RequestContext, instance_id: str, migration_id: str, disk_sent: bool = True) -> None:
        """On the destination: bind and plug the NICs, create the guest with the new flavor on the
        shipped disk: the server rests in VERIFY_RESIZE."""
        try:
            instance = states.compare_and_swap(
                self.db, instance_id, {"task_state": (states.RESIZE_MIGRATED, states.RESIZE_FINISH),
                                       "host": self.host}, task_state=states.RESIZE_FINISH)
            move = migrations.get(self.db, migration_id)
        except (NotFound, InstanceStateConflict) as exc:
            LOG.info("not finishing the move of instance %s: %s", instance_id, exc)
            return
        new = move["new_flavor"]
        try:
            vifs = self._plug_here(ctx, instance)
            resized = dict(instance, flavor_id=new["id"], vcpus=new["vcpus"], memory_mb=new["memory_mb"],
                           disk_gb=new["disk_gb"])
            if not self.driver.instance_exists(instance_id):
                with tempfile.TemporaryDirectory(dir=self._scratch()) as scratch:
                    disk = None
                    if disk_sent:
                        disk = str(Path(scratch) / "disk")
                        self.disks.get_move_disk(migration_id, disk)
                    self.driver.finish_migration(self._guest_spec(ctx, resized, vifs), disk,
                                                 power_on=move["old_vm_state"] == states.ACTIVE)
            power = self.driver.get_info(instance_id).power_state
            with self.db.begin() as session:
                migrations.advance(session, migration_id, migrations.POST_MIGRATING, status=migrations.FINISHED)
                if not states.swap(session, instance_id, {"task_state": states.RESIZE_FINISH, "host": self.host},
                                   vm_state=states.RESIZED, task_state=None, power_state=int(power),
                                   network_info=vifs, flavor_id=new["id"], vcpus=new["vcpus"],
                                   memory_mb=new["memory_mb"], disk_gb=new["disk_gb"]):
                    raise InstanceStateConflict(instance=instance_id, attr="task_state", actual="moved on",
                                                expected=states.RESIZE_FINISH)
        except Exception as exc:  # noqa: BLE001
            self._move_failed(ctx, instance_id, exc)
            return
        self._forget_disk(migration_id)
        instance_actions.finish(self.db, ctx, instance_id, instance_actions.SUCCESS)
        LOG.info("instance %s moved to %s: verify_resize (migration %s)", instance_id, self.host, migration_id)

    def _scratch(self) -> Path:
        path = Path(self.settings.default.data_dir) / "moves"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _forget_disk(self, migration_id: str) -> None:
        try:
            self.disks.delete_move_disk(migration_id)
        except Exception:  # noqa: BLE001 - a leftover object costs space, not correctness
            LOG.exception("could not delete the shipped disk of migration %s", migration_id)

    # --- confirm and revert -----------------------------------------------------------

    def confirm_resize(self, ctx: RequestContext, instance_id: str, migration_id: str) -> None:
        """On the source: remove the set-aside guest, give the source's claim back: the server
        rests active (or stopped) on its new host."""
        try:
            move = migrations.get(self.db, migration_id)
        except NotFound:
            return
        if move["status"] != migrations.CONFIRMING or move["source_host"] != self.host:
            LOG.info("not confirming migration %s: %s on %s", migration_id, move["status"], move["source_host"])
            return
        try:
            self.driver.confirm_migration(instance_id)
            instance = states.get_instance(self.db, instance_id)
            with self.db.begin() as session:
                if migrations.advance(session, migration_id, migrations.CONFIRMING, status=migrations.CONFIRMED):
                    migrations.give_back(session, self.host, move["old_flavor"])
                    migrations.give_back_quota(session, instance["project_id"],
                                               migrations.quota_beyond(move["old_flavor"], move["new_flavor"]))
                states.swap(session, instance_id, {"task_state": states.RESIZE_CONFIRMING},
                            vm_state=_resting(instance["power_state"]), task_state=None)
        except Exception as exc:  # noqa: BLE001
            self._failed(ctx, instance_id, "confirm of the resize", exc, states.RESIZE_CONFIRMING)
            return
        instance_actions.finish(self.db, ctx, instance_id, instance_actions.SUCCESS)
        LOG.info("move of instance %s confirmed (migration %s)", instance_id, migration_id)

    def revert_resize(self, ctx: RequestContext, instance_id: str, migration_id: str) -> None:
        """On the destination: destroy the moved guest, unplug, give this host's claim back, and
        hand the server back to its source (outbox)."""
        try:
            move = migrations.get(self.db, migration_id)
            instance = states.compare_and_swap(self.db, instance_id, {"task_state": states.RESIZE_REVERTING,
                                                                      "host": self.host},
                                               task_state=states.RESIZE_REVERTING)
        except (NotFound, InstanceStateConflict) as exc:
            LOG.info("not reverting instance %s here: %s", instance_id, exc)
            return
        if move["status"] != migrations.REVERTING:
            LOG.info("not reverting migration %s: it is %s", migration_id, move["status"])
            return
        source = move["source_host"]
        try:
            self.driver.destroy(instance_id)
            if source != self.host:
                self._unplug_here(ctx, instance)
            with self.db.begin() as session:
                if not migrations.advance(session, migration_id, migrations.REVERTING,
                                          status=migrations.REVERT_FINISHING):
                    raise InstanceStateConflict(instance=instance_id, attr="migration", actual="moved on",
                                                expected=migrations.REVERTING)
                migrations.give_back(session, self.host, move["new_flavor"])
                states.swap(session, instance_id, {"task_state": states.RESIZE_REVERTING, "host": self.host},
                            host=source)
                staged = self.moves.stage(session, "compute.finish_revert_resize", ctx, host=source,
                                          instance_id=instance_id, migration_id=migration_id)
        except Exception as exc:  # noqa: BLE001
            self._failed(ctx, instance_id, "revert of the resize", exc, states.RESIZE_REVERTING)
            return
        try:
            self.moves.send(staged)
        except Exception as exc:  # noqa: BLE001
            self._failed(ctx, instance_id, "revert of the resize", exc, states.RESIZE_REVERTING)

    def finish_revert_resize(self, ctx: RequestContext, instance_id: str, migration_id: str) -> None:
        """On the source: plug the NICs here again and bring the set-aside guest back with its old
        flavor: the server rests as it was before the move."""
        try:
            move = migrations.get(self.db, migration_id)
            instance = states.compare_and_swap(self.db, instance_id, {"task_state": states.RESIZE_REVERTING,
                                                                      "host": self.host},
                                               task_state=states.RESIZE_REVERTING)
        except (NotFound, InstanceStateConflict) as exc:
            LOG.info("not finishing the revert of instance %s: %s", instance_id, exc)
            return
        old = move["old_flavor"]
        try:
            vifs = self._plug_here(ctx, instance)
            self.driver.finish_revert_migration(instance_id, power_on=move["old_vm_state"] == states.ACTIVE)
            power = self.driver.get_info(instance_id).power_state
            with self.db.begin() as session:
                reverted = migrations.advance(session, migration_id, migrations.REVERT_FINISHING,
                                              status=migrations.REVERTED)
                if not states.swap(session, instance_id, {"task_state": states.RESIZE_REVERTING, "host": self.host},
                                   vm_state=_resting(power), task_state=None, power_state=int(power),
                                   network_info=vifs, flavor_id=old["id"], vcpus=old["vcpus"],
                                   memory_mb=old["memory_mb"], disk_gb=old["disk_gb"]):
                    # Deleted meanwhile: the delete settles the move and its quota (abandon_on_delete).
                    raise InstanceStateConflict(instance=instance_id, attr="task_state", actual="moved on",
                                                expected=states.RESIZE_REVERTING)
                if reverted:  # back on the old flavor: the growth the resize took goes back
                    migrations.give_back_quota(session, instance["project_id"],
                                               migrations.quota_beyond(move["new_flavor"], old))
        except Exception as exc:  # noqa: BLE001
            self._failed(ctx, instance_id, "revert of the resize", exc, states.RESIZE_REVERTING)
            return
        instance_actions.finish(self.db, ctx, instance_id, instance_actions.SUCCESS)
        LOG.info("move of instance %s reverted to %s (migration %s)", instance_id, self.host, migration_id)

    # --- delete in the middle of a move -------------------------------------------------

    def _abandon_moves_on_delete(self, ctx: RequestContext, instance_id: str) -> None:
        """After this host deleted the server: end its open move (claims and quota given back
        once) and, in the same transaction, stage ``drop_set_aside`` to a source elsewhere that
        may still keep its set-aside guest; then send it."""
        with self.db.begin() as session:
            migrations.abandon_on_delete(session, instance_id, self.host)
            move = migrations.set_aside_elsewhere(session, instance_id, self.host)
            staged = None if move is None else self.moves.stage(
                session, "compute.drop_set_aside", ctx, host=move["source_host"], instance_id=instance_id,
                migration_id=move["id"])
        if staged is not None:
            try:
                self.moves.send(staged)
            except Exception:  # noqa: BLE001 - the outbox's relay sends it again; the delete is done
                LOG.exception("could not ask %s to drop the set-aside guest of instance %s", move["source_host"],
                              instance_id)

    def drop_set_aside(self, ctx: RequestContext, instance_id: str, migration_id: str) -> None:
        """On the source of a move whose server was deleted elsewhere: remove the guest and disk
        the move set aside here. Idempotent; a server that lives here again is left alone."""
        try:
            instance = states.get_instance(self.db, instance_id, include_deleted=True)
        except NotFound:
            instance = None
        if instance is not None and not instance["deleted"] and instance["host"] == self.host:
            LOG.info("not dropping the set-aside guest of instance %s: it lives here", instance_id)
            return
        self.driver.confirm_migration(instance_id)
        LOG.info("set-aside guest of deleted instance %s dropped (migration %s)", instance_id, migration_id)

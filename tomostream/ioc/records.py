"""Record types caproto lacks, shared by every IOC of tomostream."""

from caproto.server.records import BoFields, register_record


@register_record
class BusyFields(BoFields):
    """Fields of a ``busy`` record (synApps): a ``bo`` whose put completes when the work is done."""

    _record_type = "busy"

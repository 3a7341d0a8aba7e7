"""fairseq models of the plugin. Importing this package registers them with fairseq."""
import fairseq_nas

fairseq_nas.register()

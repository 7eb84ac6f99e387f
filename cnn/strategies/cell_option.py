"""The base of the options that work on a trained cell supernet (DARTS+'s early stop, DARTS-PT's
selection): they refuse a method without one."""
from model_search import SearchError
from search_strategy import SearchOption


class CellOption(SearchOption):
    def check(self, strategy) -> None:
        """A method that trains no supernet (random search) or searches the multi-channel grid has no cells."""
        if strategy.total_epochs == 0 or strategy.config.multi_channel:
            method = f"--method {strategy.name}" + (" --multi_channel" if strategy.config.multi_channel else "")
            raise SearchError(f"{self.FLAGS[0].name} needs the architecture weights of a cell supernet, and "
                              f"{method} trains none")
